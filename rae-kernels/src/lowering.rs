//! Every kernel variant the backend launches, expanded without a device and translated by
//! any CubeCL compiler. [`lower_all`] with CUDA's compiler turns each kernel into CUDA C++
//! on a machine without a GPU, so a kernel that only lowers to WGSL is caught in CI.
//!
//! Each kernel file lists its variants (every comptime choice the host code can make and
//! every vector width) in a `variants` function next to the kernels; the conformance tests
//! also check that every `#[cube(launch_unchecked)]` function in `src/kernels/` appears
//! in [`variants`] under its own name.

use cubecl::ir::AddressType;
use cubecl::prelude::*;
use cubecl::{Compiler, Runtime};

use crate::kernels;

/// How one kernel variant fills a [`KernelBuilder`].
type Build = Box<dyn Fn(&mut KernelBuilder) + Send + Sync>;

/// One kernel with all its comptime arguments fixed.
pub struct Variant {
    /// `"<kernel fn> <comptime choices>"`, e.g. `"unary_kernel op=2 w=4"`.
    pub name: String,
    cube_dim: CubeDim,
    build: Build,
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant").field("name", &self.name).finish()
    }
}

impl Variant {
    /// A variant called `name` launched with `cube_dim`, whose `build` registers the
    /// kernel's arguments and expands its body.
    pub(crate) fn new(
        name: impl Into<String>,
        cube_dim: CubeDim,
        build: impl Fn(&mut KernelBuilder) + Send + Sync + 'static,
    ) -> Self {
        Variant {
            name: name.into(),
            cube_dim,
            build: Box::new(build),
        }
    }

    /// The kernel function's name (the first word of [`Variant::name`]).
    pub fn kernel(&self) -> &str {
        self.name.split(' ').next().unwrap_or(&self.name)
    }

    /// The kernel definition for a target with `properties`.
    fn define(&self, properties: cubecl::ir::TargetProperties) -> KernelDefinition {
        let mut builder = KernelBuilder::default();
        builder.runtime_properties(properties);
        AddressType::U32.register(&mut builder.scope);
        (self.build)(&mut builder);
        let settings = KernelSettings::default()
            .cube_dim(self.cube_dim)
            .address_type(AddressType::U32)
            .kernel_name(self.name.replace([' ', '=', ','], "_"));
        builder.build(settings)
    }
}

/// An input array argument.
pub(crate) fn input<C: CubePrimitive>(b: &mut KernelBuilder) -> NativeExpand<Array<C>> {
    <Array<C> as LaunchArg>::expand(&ArrayCompilationArg { inplace: None }, b)
}

/// An output array argument.
pub(crate) fn output<C: CubePrimitive>(b: &mut KernelBuilder) -> NativeExpand<Array<C>> {
    <Array<C> as LaunchArg>::expand_output(&ArrayCompilationArg { inplace: None }, b)
}

/// A scalar argument.
pub(crate) fn scalar<T: LaunchArg<CompilationArg = ()>>(
    b: &mut KernelBuilder,
) -> <T as CubeType>::ExpandType {
    T::expand(&(), b)
}

/// The vector widths the host code may pick.
pub(crate) const WIDTHS: [usize; 3] = [1, 2, 4];

/// Every kernel variant of every family.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    kernels::elementwise::variants(&mut v);
    kernels::reduce::variants(&mut v);
    kernels::matmul::variants(&mut v);
    kernels::norm::variants(&mut v);
    kernels::softmax::variants(&mut v);
    kernels::flash::variants(&mut v);
    kernels::rope::variants(&mut v);
    kernels::glu::variants(&mut v);
    kernels::cond::variants(&mut v);
    kernels::embed::variants(&mut v);
    kernels::layout::variants(&mut v);
    kernels::optim::variants(&mut v);
    kernels::philox::variants(&mut v);
    kernels::round::variants(&mut v);
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
