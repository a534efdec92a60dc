//! The one place that knows how values become bytes: bincode 2 over serde. The entry
//! header records the codec, so a change here is a new codec number, never a misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The codec number written in entry headers for bincode 2 (standard configuration).
pub const BINCODE2: u32 = 1;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a value; `None` if the bytes are not a valid encoding (a damaged entry).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::{Batch, Record, Value};

    #[test]
    fn batches_round_trip_including_nested_values() {
        let b = Batch::from_records(&[
            Record::new().with("t", "héllo").with("n", 3i64).with("x", 1.5),
            Record::new().with("t", Value::Null).with("n", -1i64).with("x", Value::List(vec![Value::Bool(true)])),
        ]);
        let bytes = encode(&vec![b.clone()]).unwrap();
        let back: Vec<Batch> = decode(&bytes).unwrap();
        assert_eq!(back, vec![b]);
    }

    #[test]
    fn damaged_bytes_decode_to_none_not_a_panic() {
        let b = Batch::from_records(&[Record::new().with("t", "hello world")]);
        let bytes = encode(&vec![b]).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Vec<Batch>>(&bytes[..cut]).is_none(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            // Any outcome but a panic is fine here: the header's hash catches flips.
            let _ = decode::<Vec<Batch>>(&bad);
        }
    }
}
