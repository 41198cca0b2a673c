//! Helpers shared by the CPU op and flow test binaries: deterministic test data and
//! host↔backend copies. Not every binary uses every item.
#![allow(dead_code)]

use rae_core::models::DitConfig;
use rae_core::{Backend, CpuBackend, Tensor};

/// A DiT-DH small enough for many steps in a test but with every part: backbone and head
/// (width 16, one block each, two heads), a 2×2 grid of 4 channels, position table and RoPE,
/// 3 classes.
pub fn micro_dit_config() -> DitConfig {
    DitConfig {
        input_size: 2,
        patch_size: 1,
        in_channels: 4,
        hidden_enc: 16,
        hidden_dec: 16,
        depth_enc: 1,
        depth_dec: 1,
        heads_enc: 2,
        heads_dec: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: 3,
        use_pos_embed: true,
    }
}

/// A CPU tensor.
pub type T = Tensor<CpuBackend>;

/// SplitMix64: deterministic test data from a seed.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`, rounded to f32.
    pub fn f(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unit()) as f32
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.f(lo, hi)).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Host data → a CPU tensor of shape `dims`.
pub fn up(data: &[f32], dims: &[usize]) -> T {
    CpuBackend::new().upload(data, dims).unwrap()
}

/// A CPU tensor → host data.
pub fn down(t: &T) -> Vec<f32> {
    CpuBackend::new().download(t).unwrap()
}
