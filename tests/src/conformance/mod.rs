//! The backend conformance suite, written once and run on every backend present: each
//! function below exercises one op (forward and backward) on a backend `B` and compares it
//! with [`CpuBackend`], the oracle, on fixed awkward shapes (sizes that are not multiples
//! of the vector width or of a tile, size-1 axes, 257 and 261 tokens) and on shapes drawn
//! from a seeded Philox stream.
//!
//! Before every op the memory pool is filled with NaN buffers of the output's size (see
//! [`Ctx::poison`]), so a kernel that leaves part of its output unwritten reads back a
//! NaN, which no tolerance accepts. Tolerances are stated per op as `|got − want| ≤ abs +
//! rel·|want|`; the worst errors seen are printed (`WORST <backend> <op>: ...`) and kept in
//! [`worst_errors`].

mod elementwise;
mod harness;
mod layers;
mod window;

use rae_core::backend::Backend;

pub use elementwise::{bcast_affine, binary, linear, matmul, memory, reduce, unary};
pub use harness::{cuda_or_skip, report_skip, wgpu_or_skip, worst_errors, Ctx, Gen, Pair, Tol};
pub use layers::{
    attention, embedding, fourier, layout, modulate_gate, norms, optimiser, philox, rope, softmax,
    swiglu,
};
pub use window::window2d;

/// Runs every op test of the suite on `b` (in one thread; the test binary instantiates
/// them one `#[test]` each instead).
pub fn run_all<B: Backend>(b: &B) {
    memory(b);
    unary(b);
    binary(b);
    bcast_affine(b);
    reduce(b);
    matmul(b);
    linear(b);
    norms(b);
    softmax(b);
    attention(b);
    rope(b);
    swiglu(b);
    modulate_gate(b);
    embedding(b);
    fourier(b);
    layout(b);
    optimiser(b);
    philox(b);
    window2d(b);
}
