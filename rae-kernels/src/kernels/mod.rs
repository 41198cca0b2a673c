//! The CubeCL kernels, one family per file. Each file holds the `#[cube]` kernels, one
//! `kernel_args!` list of each kernel's arguments (its launch and its lowering variant),
//! and the host functions that launch them; the backend validates shapes before calling
//! them. Kernel files use `device.rs` and `launch.rs` (and each other), never `backend.rs`.

pub(crate) mod cond;
pub(crate) mod elementwise;
pub(crate) mod embed;
pub(crate) mod flash;
pub(crate) mod flash_backward;
pub(crate) mod glu;
pub(crate) mod layout;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod philox;
pub(crate) mod reduce;
pub(crate) mod rope;
pub(crate) mod round;
pub(crate) mod softmax;
pub(crate) mod window;
