//! [`XorShift64`]: the one small PRNG of pvkit's tests, benchmarks and
//! example kernels. It needs neither `std` nor `alloc`.

/// Marsaglia's xorshift64 (shifts 13, 7, 17): fast, deterministic, and good
/// enough to pick offsets and fill buffers with garbage. Not for secrets.
///
/// ```
/// use pvkit_guest::test_utils::XorShift64;
///
/// let mut rng = XorShift64::new(1);
/// assert_eq!(rng.next_u64(), 0x4082_2041);
/// assert!(rng.below(10) < 10);
/// let mut bytes = [0u8; 5];
/// rng.fill_bytes(&mut bytes);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// The seed a seed of 0 is replaced with: xorshift's state must not be 0.
    pub const ZERO_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A generator from `seed` (0 is replaced by [`XorShift64::ZERO_SEED`]).
    pub const fn new(seed: u64) -> Self {
        Self { state: if seed == 0 { Self::ZERO_SEED } else { seed } }
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A value below `bound` (0 when `bound` is 0). Slightly biased towards
    /// small values when `bound` is not a power of two; fine for tests.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64().checked_rem(bound).unwrap_or(0)
    }

    /// Fills `bytes` with the next values, little-endian.
    pub fn fill_bytes(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(word.get(..chunk.len()).unwrap_or(&[]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_the_classic_xorshift64() {
        let mut rng = XorShift64::new(1);
        // x ^= x << 13; x ^= x >> 7; x ^= x << 17, from 1, by hand.
        let mut x: u64 = 1;
        for _ in 0..100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(rng.next_u64(), x);
        }
        assert_eq!(XorShift64::new(0), XorShift64::new(XorShift64::ZERO_SEED));
    }

    #[test]
    fn bytes_and_bounds() {
        let mut rng = XorShift64::new(7);
        let mut bytes = [0u8; 13];
        rng.fill_bytes(&mut bytes);
        let mut again = XorShift64::new(7);
        assert_eq!(bytes[..8], again.next_u64().to_le_bytes());
        assert_eq!(bytes[8..], again.next_u64().to_le_bytes()[..5]);
        assert!((0..1000).all(|_| rng.below(3) < 3));
        assert_eq!(rng.below(0), 0);
    }
}
