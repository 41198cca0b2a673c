//! # rae-backend-cuda
//!
//! `CudaBackend`: the kernels of `rae-kernels` compiled for NVIDIA GPUs through CubeCL's
//! CUDA runtime. Construction probes for the CUDA driver first and returns an error, never
//! a panic, on machines without one.
