//! Eight bytes at a time: the tests text kernels use to find the next byte they must look
//! at (a control byte, a quote, a doubled space...) without a branch per byte.
//!
//! Each function flags bytes of a little-endian `u64` in their high bit. The lowest flag
//! is exact; a borrow in the arithmetic can flag bytes above it, so a caller takes the
//! lowest flag (`trailing_zeros() / 8`) and decides on that byte itself.

/// `0x01` in every byte.
pub const LO: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte: the flags, and the bytes that are not ASCII.
pub const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` below `n` (at most 0x80).
#[inline]
#[must_use]
pub fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// The high bit of each byte of `x` equal to `b`.
#[inline]
#[must_use]
pub fn bytes_equal(x: u64, b: u8) -> u64 {
    bytes_below(x ^ (LO * u64::from(b)), 1)
}

/// The eight bytes of `s` from `i`, as a little-endian word (`s` must have them).
#[inline]
#[must_use]
pub fn word(s: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_flag_is_exact_for_every_byte_and_position() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let x = u64::from_le_bytes(w);
                let first = |m: u64| (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
                assert_eq!(first(bytes_below(x, 0x20)), (b < 0x20).then_some(pos), "{b:#x} at {pos}");
                assert_eq!(first(bytes_equal(x, b'"')), (b == b'"').then_some(pos), "{b:#x} at {pos}");
            }
        }
    }
}
