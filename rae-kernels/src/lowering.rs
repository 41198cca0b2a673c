//! Every kernel variant the backend launches, expanded without a device and translated by
//! any CubeCL compiler. [`lower_all`] with CUDA's compiler turns each kernel into CUDA C++
//! on a machine without a GPU, so a kernel that only lowers to WGSL is caught in CI.
//!
//! Each kernel file lists its variants (every comptime choice the host code can make and
//! every vector width) in a `variants` function next to the kernels, built from each
//! kernel's `kernel_args!` list (`launch.rs`), the same list its launch uses; the tests
//! also check that every `#[cube(launch_unchecked)]` function in `src/kernels/` appears
//! in [`variants`] under its own name.

use cubecl::ir::AddressType;
use cubecl::prelude::ExecutionMode;
use cubecl::{Compiler, Runtime};

use crate::kernels;
pub use crate::launch::Variant;

/// Every kernel variant of every family.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    kernels::elementwise::variants(&mut v);
    kernels::reduce::variants(&mut v);
    kernels::matmul::variants(&mut v);
    kernels::norm::variants(&mut v);
    kernels::softmax::variants(&mut v);
    kernels::flash::variants(&mut v);
    kernels::flash_backward::variants(&mut v);
    kernels::rope::variants(&mut v);
    kernels::glu::variants(&mut v);
    kernels::cond::variants(&mut v);
    kernels::embed::variants(&mut v);
    kernels::layout::variants(&mut v);
    kernels::optim::variants(&mut v);
    kernels::philox::variants(&mut v);
    kernels::round::variants(&mut v);
    kernels::window::variants(&mut v);
    v
}

/// Expands every variant for runtime `R`'s target and translates it with compilers made by
/// `compiler`: `(variant name, source or error)`. Needs no device (CUDA's compiler works on
/// machines without a GPU). A panic while expanding or compiling is reported as that
/// variant's error.
pub fn lower_all<R: Runtime>(
    compiler: impl Fn() -> R::Compiler,
) -> Vec<(String, Result<String, String>)> {
    variants()
        .into_iter()
        .map(|var| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let def = var.define(R::target_properties());
                let mut compiler = compiler();
                let options = <R::Compiler as Compiler>::CompilationOptions::default();
                compiler
                    .compile(
                        def,
                        &options,
                        ExecutionMode::Unchecked,
                        AddressType::U32.unsigned_type(),
                    )
                    .map(|src| src.to_string())
                    .map_err(|e| format!("{e:?}"))
            }));
            let result = match result {
                Ok(r) => r,
                Err(p) => Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| String::from("panicked"))),
            };
            (var.name, result)
        })
        .collect()
}
