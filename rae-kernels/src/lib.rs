//! # rae-kernels
//!
//! CubeCL kernels for every op of [`rae_core::Backend`], each written once, and
//! `CubeBackend<R: Runtime>`, which implements the trait for any CubeCL runtime. The
//! `rae-backend-wgpu` and `rae-backend-cuda` crates instantiate it for WGPU and CUDA.
