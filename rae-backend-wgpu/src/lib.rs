//! # rae-backend-wgpu
//!
//! `WgpuBackend`: the kernels of `rae-kernels` compiled to WGSL through CubeCL's WGPU
//! runtime. It prefers a discrete or integrated GPU and falls back to a CPU adapter
//! (Mesa's lavapipe) when asked or when that is the only adapter.
