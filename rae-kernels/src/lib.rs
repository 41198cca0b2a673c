//! # rae-kernels
//!
//! CubeCL kernels for every op of [`rae_core::Backend`], each written once, and
//! [`CubeBackend`], which implements the trait for any CubeCL runtime. The
//! `rae-backend-wgpu` and `rae-backend-cuda` crates instantiate it for WGPU and CUDA.
//!
//! Shapes follow spec §0 (`[B, N, C]` tokens, `[B, C, H, W]` images, weights `[out, in]`);
//! every op checks its arguments with `rae_core::check` first, so a shape error reads the
//! same as on the CPU backend.
//!
//! Kernel families (one file each under `kernels/`): element-wise functions and fills,
//! broadcast conditioning (bias, adaLN modulate/gate), reductions (shared memory only),
//! matmul (cubek's f32 kernel, with our shared-memory tiled kernel as fallback), LayerNorm
//! and RMSNorm, softmax (with the attention scale folded in), fused (flash) attention
//! forward and backward, RoPE, SwiGLU, embeddings and
//! Fourier features, layout copies, AdamW/EMA, Philox fills bit-identical to
//! `rae_core::rng`, and the operand rounding of `--precision tf32|bf16` (§7.5). Element-wise kernels load `vec4`s when every length allows and fall
//! back to `vec2` or scalars otherwise. [`lowering`] expands every kernel variant without
//! a device, so CUDA's compiler can be checked on machines without a GPU.

#![warn(missing_docs)]

mod backend;
mod device;
pub mod kernels;
mod launch;
pub mod lowering;
mod precision;

pub use cubecl;
pub use device::{AttentionKernel, CubeBackend, CubeStorage, MatmulKernel};
