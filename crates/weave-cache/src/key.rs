//! Cache keys: blake3 over everything that decides a step's output.

use std::fmt;

/// A 256-bit cache key, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Key([u8; 32]);

impl Key {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Key> {
        blake3::Hash::from_hex(s).ok().map(|h| Key(*h.as_bytes()))
    }

    /// The key of a piece of content.
    pub fn of_content(bytes: &[u8]) -> Key {
        Key(*blake3::hash(bytes).as_bytes())
    }
}

impl From<blake3::Hash> for Key {
    fn from(h: blake3::Hash) -> Self {
        Key(*h.as_bytes())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

/// Builds a key from named parts. Every part is written with its name and length, so
/// that no two different lists of parts hash alike (`"ab" + "c"` is not `"a" + "bc"`).
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    /// A builder for keys of one purpose (`"step-output"`, `"batch"`): keys of different
    /// purposes never collide.
    pub fn new(purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("weave cache key v1");
        hasher.update(&(purpose.len() as u64).to_le_bytes());
        hasher.update(purpose.as_bytes());
        KeyBuilder { hasher }
    }

    /// Adds a named part.
    pub fn part(mut self, name: &str, bytes: &[u8]) -> Self {
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Adds a named number.
    pub fn number(self, name: &str, n: u64) -> Self {
        self.part(name, &n.to_le_bytes())
    }

    /// Adds a named key (an input's key: the Merkle chain through the DAG).
    pub fn key(self, name: &str, key: &Key) -> Self {
        self.part(name, key.as_bytes())
    }

    /// The key.
    pub fn finish(&self) -> Key {
        Key(*self.hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_framed_so_boundaries_matter() {
        let a = KeyBuilder::new("t").part("x", b"ab").part("y", b"c").finish();
        let b = KeyBuilder::new("t").part("x", b"a").part("y", b"bc").finish();
        assert_ne!(a, b);
        let c = KeyBuilder::new("u").part("x", b"ab").part("y", b"c").finish();
        assert_ne!(a, c, "purposes separate keys");
        assert_eq!(a, KeyBuilder::new("t").part("x", b"ab").part("y", b"c").finish());
        assert_eq!(Key::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Key::from_hex("zz"), None);
    }
}
