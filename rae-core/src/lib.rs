//! # rae-core
//!
//! The embeddable core of **rae**, a Rust implementation of *Diffusion Transformers with
//! Representation Autoencoders* (RAE, arXiv 2510.11690): tensors and shapes, the
//! [`Backend`] trait with a plain [`CpuBackend`], layers with explicit forward and backward,
//! the DINOv2 / decoder / DiT-DH models, flow matching, samplers, guidance, optimisers,
//! learning-rate schedules, metrics, Philox random numbers and safetensors I/O.
//!
//! `#![no_std]` with `alloc`. Feature `std` (default) adds threads to the CPU backend and
//! `std::error::Error`; feature `gemm` (default) routes CPU matrix products through the
//! `gemm` crate. `cargo build -p rae-core --no-default-features` builds the core alone.
//!
//! Section numbers such as §3.4 refer to the project's specification
//! (`docs/spec.md`); shapes follow its §0 conventions.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod check;
pub mod cpu;
pub mod error;
pub mod flow;
pub mod gan;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod precision;
pub mod rng;
pub mod safetensors;
pub mod shape;
pub mod tensor;
pub mod train;

pub use backend::{Backend, Binary, PatchOrder, Pool2d, Reduce, Unary, Window2d};
pub use cpu::CpuBackend;
pub use error::{Error, Result};
pub use precision::Precision;
pub use rng::PhiloxKey;
pub use shape::Shape;
pub use tensor::Tensor;
