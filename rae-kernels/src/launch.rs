//! What every kernel family needs to launch its kernels and to list their variants: launch
//! geometry, kernel arguments over device memory, the [`Variant`] of a kernel with its
//! comptime arguments fixed (expanded without a device by [`crate::lowering`]) and
//! [`kernel_args!`], which derives both a kernel's launch and its variant from one list of
//! its arguments.

use cubecl::ir::AddressType;
use cubecl::prelude::*;
use cubecl::server::Handle;
use rae_core::{Error, Result, Tensor};

use crate::device::{CubeBackend, CubeStorage};

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
    pub(crate) fn define(&self, properties: cubecl::ir::TargetProperties) -> KernelDefinition {
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

/// One source for a kernel's arguments: from the list of a `#[cube(launch_unchecked)]`
/// kernel's runtime arguments (in signature order, each `input T`, `output T` or
/// `scalar T`) and, after `;`, its comptime arguments (also in order), generates a module
/// `$m` with
///
/// - `Args<R>`, a struct with one field per argument (`ArrayArg<R>` for arrays), whose
///   unsafe `launch(be, count, dim[, w])` launches the kernel with them, and
/// - `variant(choices, dim[, w], comptime...)`, the kernel's [`Variant`] named
///   `"<kernel> <choices>"` (just the kernel's name when `choices` is empty).
///
/// A kernel generic over its vector size is written `kernel<N>`; its launch and variant
/// take the vector width `w`, and its element type is written `V` (`Vector<f32, N>`):
///
/// ```text
/// kernel_args! {
///     unary_args: unary_kernel<N> { x: input V, y: output V; op: u32 }
/// }
/// // host:     unary_args::Args { x: tarr(x), y: sarr(&out), op }.launch(be, count, dim, w)
/// // variants: unary_args::variant(&format!("op={op} w={w}"), dim, w, op)
/// ```
///
/// Adding an argument means editing the `#[cube]` signature and this list; the compiler
/// checks the list's types against the signature through both `launch_unchecked` and
/// `expand`, and the host function must then fill the new field.
macro_rules! kernel_args {
    (@field $r:ident, input, $t:ty) => { ::cubecl::prelude::ArrayArg<$r> };
    (@field $r:ident, output, $t:ty) => { ::cubecl::prelude::ArrayArg<$r> };
    (@field $r:ident, scalar, $t:ty) => { $t };
    (@expand $b:ident, input, $t:ty) => { $crate::launch::input::<$t>($b) };
    (@expand $b:ident, output, $t:ty) => { $crate::launch::output::<$t>($b) };
    (@expand $b:ident, scalar, $t:ty) => { $crate::launch::scalar::<$t>($b) };
    (@struct $k:ident $(, $w:ident)? {
        $($arg:ident : $kind:ident $ty:ty),+ $(,)? ; $($ct:ident : $cty:ty),* $(,)?
    }) => {
        use ::cubecl::prelude::*;

        /// The kernel's arguments, named as in its signature.
        pub(crate) struct Args<R: Runtime> {
            $(pub(crate) $arg: $crate::launch::kernel_args!(@field R, $kind, $ty),)+
            $(pub(crate) $ct: $cty,)*
        }

        impl<R: Runtime> Args<R> {
            /// Launches the kernel with these arguments.
            ///
            /// # Safety
            ///
            /// The arrays must hold every index the kernel's units read or write for
            /// this grid (see the kernel's host function).
            pub(crate) unsafe fn launch(
                self,
                be: &$crate::device::CubeBackend<R>,
                count: CubeCount,
                dim: CubeDim,
                $($w: usize,)?
            ) {
                let Args { $($arg,)+ $($ct,)* } = self;
                // SAFETY: forwarded to the caller.
                unsafe {
                    super::$k::launch_unchecked::<R>(
                        be.client(), count, dim, $($w,)? $($arg,)+ $($ct,)*
                    )
                }
            }
        }

        /// `"<kernel> <choices>"`: the kernel's name and the comptime choices it was
        /// expanded with.
        fn name(choices: &str) -> String {
            match choices {
                "" => String::from(stringify!($k)),
                c => format!("{} {c}", stringify!($k)),
            }
        }
    };
    ($m:ident: $k:ident<$n:ident> { $($body:tt)* }) => {
        pub(crate) mod $m {
            $crate::launch::kernel_args!(@struct $k, w { $($body)* });
            $crate::launch::kernel_args!(@variant $k<$n> { $($body)* });
        }
    };
    ($m:ident: $k:ident { $($body:tt)* }) => {
        pub(crate) mod $m {
            $crate::launch::kernel_args!(@struct $k { $($body)* });
            $crate::launch::kernel_args!(@variant $k { $($body)* });
        }
    };
    (@variant $k:ident<$n:ident> {
        $($arg:ident : $kind:ident $ty:ty),+ $(,)? ; $($ct:ident : $cty:ty),* $(,)?
    }) => {
        /// The kernel for vector width `w` and these comptime arguments.
        pub(crate) fn variant(
            choices: &str,
            dim: CubeDim,
            w: usize,
            $($ct: $cty),*
        ) -> $crate::launch::Variant {
            $crate::launch::Variant::new(name(choices), dim, move |b| {
                #[allow(dead_code)]
                type V = Vector<f32, super::$k::$n>;
                b.scope.register_size::<super::$k::$n>(w);
                $(let $arg = $crate::launch::kernel_args!(@expand b, $kind, $ty);)+
                super::$k::expand::<super::$k::$n>(&mut b.scope, w, $($arg,)+ $($ct,)*);
            })
        }
    };
    (@variant $k:ident {
        $($arg:ident : $kind:ident $ty:ty),+ $(,)? ; $($ct:ident : $cty:ty),* $(,)?
    }) => {
        /// The kernel for these comptime arguments.
        pub(crate) fn variant(choices: &str, dim: CubeDim, $($ct: $cty),*) -> $crate::launch::Variant {
            $crate::launch::Variant::new(name(choices), dim, move |b| {
                $(let $arg = $crate::launch::kernel_args!(@expand b, $kind, $ty);)+
                super::$k::expand(&mut b.scope, $($arg,)+ $($ct,)*);
            })
        }
    };
}
pub(crate) use kernel_args;

/// Units per cube of the 1-D element-wise kernels.
pub(crate) const CUBE_1D: u32 = 256;

/// The largest cube count per grid axis that every runtime accepts (WebGPU's limit).
const MAX_CUBES_PER_AXIS: u32 = 65_535;

/// A grid of cubes that covers `cubes` cubes: along x first, then y. Kernels read their
/// linear index from `ABSOLUTE_POS` (or `CUBE_POS_X + CUBE_POS_Y · CUBE_COUNT_X`) and skip
/// the excess units of the last row.
pub(crate) fn spread(cubes: usize) -> CubeCount {
    let cubes = cubes.max(1) as u64;
    let x = cubes.min(MAX_CUBES_PER_AXIS as u64);
    let y = cubes.div_ceil(x);
    CubeCount::Static(x as u32, y as u32, 1)
}

/// Grid and cube for one unit per item of `units` (a 1-D launch of [`CUBE_1D`] units per
/// cube).
pub(crate) fn grid_1d(units: usize) -> (CubeCount, CubeDim) {
    (
        spread(units.div_ceil(CUBE_1D as usize)),
        CubeDim::new_1d(CUBE_1D),
    )
}

/// The widest vector (4, 2 or 1 floats) that divides every length in `lens`, limited to
/// what the backend loads in one instruction.
pub(crate) fn vector_width<R: Runtime>(be: &CubeBackend<R>, lens: &[usize]) -> usize {
    let mut w = be.max_vector();
    while w > 1 && lens.iter().any(|&l| l % w != 0) {
        w /= 2;
    }
    w
}

/// A `u32` kernel argument; an error naming `what` when the value does not fit.
pub(crate) fn u32_arg(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::invalid(
            what,
            format!("{v} is larger than the 32-bit index range of the GPU kernels"),
        )
    })
}

/// An array argument over the first `len` floats of `handle`.
///
/// # Safety
///
/// `handle` must hold at least `len` f32 values.
pub(crate) unsafe fn arr<R: Runtime>(handle: &Handle, len: usize) -> ArrayArg<R> {
    // SAFETY: forwarded to the caller.
    unsafe { ArrayArg::from_raw_parts(handle.clone(), len) }
}

/// The array argument of a tensor's storage (its `numel` floats).
pub(crate) fn tarr<R: Runtime>(x: &Tensor<CubeBackend<R>>) -> ArrayArg<R> {
    let s = x.storage();
    // SAFETY: a CubeStorage always holds at least the element count of the tensor that
    // owns it (checked when the tensor is built, see `CubeBackend::tensor`).
    unsafe { arr(s.handle(), x.numel().min(s.len())) }
}

/// The array argument of a raw storage.
pub(crate) fn sarr<R: Runtime>(s: &CubeStorage) -> ArrayArg<R> {
    // SAFETY: `len` is the number of floats the storage was allocated with.
    unsafe { arr(s.handle(), s.len()) }
}

/// A u32 array argument over `len` values of `handle`.
///
/// # Safety
///
/// `handle` must hold at least `len` u32 values.
pub(crate) unsafe fn arr_u32<R: Runtime>(handle: &Handle, len: usize) -> ArrayArg<R> {
    // SAFETY: forwarded to the caller.
    unsafe { ArrayArg::from_raw_parts(handle.clone(), len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_every_cube_within_the_axis_limit() {
        for cubes in [0usize, 1, 2, 65_535, 65_536, 65_537, 1 << 24, 4_000_000_007] {
            let CubeCount::Static(x, y, z) = spread(cubes) else {
                panic!("spread must give a static count");
            };
            assert!((1..=MAX_CUBES_PER_AXIS).contains(&x) && y <= MAX_CUBES_PER_AXIS && z == 1);
            let total = x as u64 * y as u64;
            assert!(total >= cubes.max(1) as u64, "{cubes}: {x}×{y}");
            // No more than one extra row of idle cubes.
            assert!(total - (cubes.max(1) as u64) < x as u64, "{cubes}: {x}×{y}");
        }
    }

    #[test]
    fn u32_arguments_reject_what_does_not_fit() {
        assert_eq!(u32_arg("x", 7).ok(), Some(7));
        let e = u32_arg("matmul rows", 1 << 40)
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("matmul rows")));
    }
}
