//! The subset of numpy's legacy `np.random.RandomState` that torch-fidelity draws its
//! Inception Score shuffle and its KID subsets from (§6.1), so that both metrics reproduce
//! torch-fidelity's numbers exactly, seed for seed (torch-fidelity's default seed is 2020).
//!
//! * `RandomState(seed)` with an integer seed is the Mersenne Twister MT19937 seeded by the
//!   reference `init_genrand` (Matsumoto and Nishimura, 2002).
//! * `permutation(n)` shuffles `0..n` by Fisher–Yates from the top, `j` uniform in `0..=i`
//!   by masked rejection (the smallest all-ones mask covering `i`, one 32-bit draw per try).
//! * `choice(n, m, replace=False)` without weights is `permutation(n)[..m]`.
//!
//! These are checked against numpy's own output in `tests/fixtures/eval_metrics.safetensors`.

use alloc::vec::Vec;

/// Words of MT19937 state.
const N: usize = 624;
/// The twist offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

/// numpy's legacy `RandomState` (MT19937) for the draws torch-fidelity makes.
#[derive(Clone)]
pub struct NumpyRandomState {
    mt: [u32; N],
    pos: usize,
}

impl core::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NumpyRandomState {{ pos: {} }}", self.pos)
    }
}

impl NumpyRandomState {
    /// `np.random.RandomState(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            let prev = mt[i - 1];
            mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { mt, pos: N }
    }

    /// Regenerates the 624 words of state.
    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % N] & LOWER);
            let mag = if y & 1 != 0 { MATRIX_A } else { 0 };
            self.mt[i] = self.mt[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next tempered 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.twist();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A uniform integer in `0..=max` by masked rejection, as numpy's `random_interval`
    /// (64-bit draws, high word first, when `max` needs more than 32 bits).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        loop {
            let v = if max <= u64::from(u32::MAX) {
                u64::from(self.next_u32()) & mask
            } else {
                let hi = u64::from(self.next_u32());
                ((hi << 32) | u64::from(self.next_u32())) & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `permutation(n)`: `0..n` shuffled in place from the last position down.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            p.swap(i, j);
        }
        p
    }

    /// `choice(n, m, replace=False)` without weights: the first `m` of `permutation(n)`
    /// (`m ≤ n`, checked by the caller).
    pub fn choice_without_replacement(&mut self, n: usize, m: usize) -> Vec<usize> {
        let mut p = self.permutation(n);
        p.truncate(m);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_outputs_of_init_genrand_5489() {
        // The first outputs of the reference mt19937ar.c seeded with 5489 (std::mt19937).
        let mut r = NumpyRandomState::new(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        assert_eq!(r.next_u32(), 581_869_302);
        assert_eq!(r.next_u32(), 3_890_346_734);
        let mut r = NumpyRandomState::new(5489);
        for _ in 0..9999 {
            r.next_u32();
        }
        // std::mt19937's 10000th output (C++11 [rand.predef]).
        assert_eq!(r.next_u32(), 4_123_659_995);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = NumpyRandomState::new(2020);
        let mut p = r.permutation(1000);
        p.sort_unstable();
        assert!(p.iter().enumerate().all(|(i, &v)| i == v));
    }
}
