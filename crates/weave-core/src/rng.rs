//! Seeded randomness, and the output stability contract it carries.
//!
//! # The output stability contract
//!
//! Every random choice a step makes (noise, splits, samples, mixes, generated records,
//! near-duplicate signatures) is drawn from the functions of this module, seeded by the
//! pipeline's `seed` (or a step's own `seed` key) and by something that does not depend on
//! how the run went: a record's content or key fields for stateless steps, a record's
//! position in its input for stateful ones, the step's id. So:
//!
//! - the same pipeline, data and seed give the same output bytes on every platform, with
//!   any thread count, batch size or channel capacity;
//! - a different seed (or step id, for `augment`) gives different choices;
//! - the streams never change with a dependency: they are written here rather than taken
//!   from a crate, and golden tests (this module's, and the steps' seeded outputs) pin
//!   their numbers. Changing one of these functions changes every seeded dataset ever
//!   made, so it needs a new step version (`StepInfo::version`), which moves the cache
//!   keys, and a line in the changelog.
//!
//! This module is the one home of that contract: the steps' documentation points here.

/// The golden-ratio increment of SplitMix64's counter (2^64 / φ, odd).
pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a bijective mix of 64 bits, every input bit spread over the
/// output, so consecutive inputs (positions, counters) give unrelated numbers.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The murmur3 64-bit finaliser (`fmix64`): another bijective mix, the one the
/// near-duplicate signatures were built on (their permutations and shingle hashes), kept
/// beside [`mix`] so that every generator of the workspace lives here.
#[inline]
pub fn murmur_mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A number in [0, 1) from the top 53 bits of `x`.
#[inline]
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A small, fast random stream (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream starting from `seed`.
    #[inline]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Stream number `index` derived from `seed`: each user of one seed (each noiser of a
    /// chain, say) draws from a stream of its own, so adding a user at the end does not
    /// change what the earlier ones draw.
    #[inline]
    pub fn substream(seed: u64, index: usize) -> Self {
        Rng(mix(seed ^ (index as u64 + 1).wrapping_mul(GAMMA)))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// A number in `0..n` (`n` must be at least 1), by multiply-and-shift: the bias is
    /// below n / 2^64.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `p` (0 never, 1 always).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        unit(self.next_u64()) < p
    }

    /// One element of `items` (which must not be empty).
    #[inline]
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The numbers below are part of the output contract: they must never change (see the
    // module's documentation). They were recorded from the generators as they stood
    // before this module gathered them.
    const GOLDEN_RNG1: [u64; 3] = [0x910a_2dec_8902_5cc1, 0xbeeb_8da1_658e_ec67, 0xf893_a2ee_fb32_555e];
    const GOLDEN_SUBSTREAM: [u64; 2] = [0x304e_b8ff_7a2f_5ddb, 0x3bc9_7287_faa9_4f3f];
    const GOLDEN_MIX: [u64; 3] = [0, 0x5692_161d_100b_05e5, 0xf36c_f116_4265_dd51];
    const GOLDEN_MURMUR: u64 = 0x17d2_abfb_f90b_aef9;

    #[test]
    fn the_streams_are_fixed_forever() {
        let mut r = Rng::new(42);
        assert_eq!([r.next_u64(), r.next_u64()], [0xbdd7_3226_2feb_6e95, 0x28ef_e333_b266_f103]);
        let mut r = Rng::new(1);
        assert_eq!([r.next_u64(), r.next_u64(), r.next_u64()], GOLDEN_RNG1);
        let mut r = Rng::substream(42, 1);
        assert_eq!([r.next_u64(), r.next_u64()], GOLDEN_SUBSTREAM);
        assert_eq!([mix(0), mix(1), mix(12345)], GOLDEN_MIX);
        assert_eq!(murmur_mix(12345), GOLDEN_MURMUR);
    }

    #[test]
    fn draws_are_spread() {
        let mut r = Rng::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        let hits = (0..100_000).filter(|_| r.chance(0.25)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert_eq!(*Rng::new(3).pick(&[5]), 5);
        assert!((0.0..1.0).contains(&unit(u64::MAX)));
    }
}
