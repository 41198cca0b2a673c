//! The backend conformance suite (`rae_tests::conformance`) instantiated for every backend
//! this machine has: WGPU (a GPU, or lavapipe) and CUDA, each op a test of its own, plus the
//! CPU against itself as a check of the harness.
//!
//! A backend that is not present prints `SKIPPED: ...`. With `RAE_REQUIRE_WGPU=1` a
//! missing WGPU adapter fails every WGPU test instead (CI installs Mesa's lavapipe).
//!
//! Run: `XDG_RUNTIME_DIR=/tmp RAE_REQUIRE_WGPU=1 cargo test -p rae-tests --test conformance
//! -- --nocapture` (the `WORST` lines are the per-op error table).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_backend_cuda::CudaBackend;
use rae_backend_wgpu::WgpuBackend;
use rae_core::CpuBackend;
use rae_kernels::MatmulKernel;
use rae_tests::conformance::{self as suite, cuda_or_skip, wgpu_or_skip};

/// The WGPU backend restricted to our own tiled matmul kernel (the default backend uses
/// cubek's and falls back to ours only for problems cubek declines).
fn wgpu_tiled() -> Option<WgpuBackend> {
    wgpu_or_skip().map(|b| b.clone().with_matmul(MatmulKernel::Tiled))
}

/// The CUDA backend restricted to our tiled matmul kernel.
fn cuda_tiled() -> Option<CudaBackend> {
    cuda_or_skip().map(|b| b.clone().with_matmul(MatmulKernel::Tiled))
}

/// One `#[test]` per op of the suite for the backend `$get` returns.
macro_rules! instantiate {
    ($module:ident, $get:expr) => {
        mod $module {
            use super::*;
            instantiate!(@ops $get; memory, unary, binary, bcast_affine, reduce, matmul, linear,
                norms, softmax, attention, rope, swiglu, modulate_gate, embedding, fourier,
                layout, optimiser, philox, window2d);
        }
    };
    (@ops $get:expr; $($op:ident),* $(,)?) => {
        $(
            #[test]
            fn $op() {
                if let Some(b) = $get {
                    suite::$op(&b);
                }
            }
        )*
    };
}

instantiate!(wgpu_backend, wgpu_or_skip().cloned());

mod wgpu_tiled_matmul {
    use super::*;
    instantiate!(@ops wgpu_tiled(); matmul, linear, attention);
}

instantiate!(cuda_backend, cuda_or_skip().cloned());

mod cuda_tiled_matmul {
    use super::*;
    instantiate!(@ops cuda_tiled(); matmul, linear, attention);
}
instantiate!(cpu_backend, Some(CpuBackend::new()));
