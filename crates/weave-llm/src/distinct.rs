//! The `distinct` figure of an LLM step: how many different answers it had in a run, in
//! bounded memory. Exact up to [`EXACT`] different answers (a set of 64-bit hashes);
//! past that, a HyperLogLog estimate with 2^14 registers (16 KiB, about 0.8% standard
//! error), so that a step of millions of answers does not hold a set of millions.

use std::collections::HashSet;

/// How many different answers are counted exactly.
const EXACT: usize = 1 << 16;

/// The registers' index bits: 2^14 registers.
const BITS: u32 = 14;

/// The answers seen, by a hash of their text.
#[derive(Debug, Default)]
pub(crate) struct Distinct {
    exact: HashSet<u64>,
    /// The HyperLogLog registers, once past [`EXACT`].
    registers: Option<Vec<u8>>,
}

impl Distinct {
    /// Counts `text`.
    pub(crate) fn add(&mut self, text: &str) {
        let h = blake3::hash(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.as_bytes()[..8]);
        let h = u64::from_le_bytes(first);
        match &mut self.registers {
            Some(r) => observe(r, h),
            None => {
                self.exact.insert(h);
                if self.exact.len() > EXACT {
                    let mut r = vec![0u8; 1 << BITS];
                    for &h in &self.exact {
                        observe(&mut r, h);
                    }
                    self.exact = HashSet::new();
                    self.registers = Some(r);
                }
            }
        }
    }

    /// How many different texts were counted (estimated past [`EXACT`]).
    pub(crate) fn count(&self) -> u64 {
        let Some(r) = &self.registers else { return self.exact.len() as u64 };
        let m = r.len() as f64;
        let sum: f64 = r.iter().map(|&x| 2f64.powi(-i32::from(x))).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let estimate = alpha * m * m / sum;
        let zeros = r.iter().filter(|&&x| x == 0).count();
        // Linear counting while registers are still empty: better for small counts.
        if estimate <= 2.5 * m && zeros > 0 {
            return (m * (m / zeros as f64).ln()).round() as u64;
        }
        estimate.round() as u64
    }
}

/// Puts hash `h` in its register: the position of the first 1 bit after the index bits.
fn observe(registers: &mut [u8], h: u64) {
    let index = (h >> (64 - BITS)) as usize;
    let rest = (h << BITS) | (1 << (BITS - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    registers[index] = registers[index].max(rank);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small_then_within_a_few_percent_in_bounded_memory() {
        let mut d = Distinct::default();
        for i in 0..1000 {
            d.add(&format!("answer {}", i % 400));
        }
        assert_eq!(d.count(), 400);
        for i in 0..300_000 {
            d.add(&format!("answer {i}"));
        }
        assert!(d.registers.is_some() && d.exact.is_empty(), "past the exact count, registers only");
        let n = d.count() as f64;
        assert!((n - 300_000.0).abs() < 0.03 * 300_000.0, "{n}");
    }
}
