//! Deterministic parameter initialisation from a Philox stream, so a model built from a
//! seed is the same on every backend and every run.

use crate::backend::Backend;
use crate::error::Result;
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// The element count of `dims`, or an error when it overflows.
fn checked_numel(dims: &[usize]) -> Result<usize> {
    Ok(crate::shape::Shape::new(dims)?.numel())
}

/// Draws initial parameter values on the host and uploads them.
#[derive(Debug, Clone)]
pub struct Init {
    stream: PhiloxStream,
}

impl Init {
    /// An initialiser for `seed` (stream 0 of the seed is reserved for initialisation).
    pub fn new(seed: u64) -> Self {
        Init {
            stream: PhiloxStream::new(seed, 0x1417),
        }
    }

    /// `U(lo, hi)` values.
    pub fn uniform<B: Backend>(
        &mut self,
        b: &B,
        dims: &[usize],
        lo: f32,
        hi: f32,
    ) -> Result<Tensor<B>> {
        let n = checked_numel(dims)?;
        let mut v = crate::limits::try_filled("parameter", n, 0.0)?;
        self.stream.uniforms(&mut v);
        for x in &mut v {
            *x = lo + (hi - lo) * *x;
        }
        b.upload(&v, dims)
    }

    /// `N(0, std²)` values.
    pub fn normal<B: Backend>(&mut self, b: &B, dims: &[usize], std: f32) -> Result<Tensor<B>> {
        let n = checked_numel(dims)?;
        let mut v = crate::limits::try_filled("parameter", n, 0.0)?;
        self.stream.normals(&mut v);
        for x in &mut v {
            *x *= std;
        }
        b.upload(&v, dims)
    }

    /// Xavier-uniform on the `[out, in]` view of `dims` (`bound = √(6/(in + out))`, §3.7).
    pub fn xavier_uniform<B: Backend>(&mut self, b: &B, dims: &[usize]) -> Result<Tensor<B>> {
        let out = dims[0];
        let inp: usize = dims[1..].iter().product();
        let bound = libm::sqrtf(6.0 / (inp + out).max(1) as f32);
        self.uniform(b, dims, -bound, bound)
    }
}
