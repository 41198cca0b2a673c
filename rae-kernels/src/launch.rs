//! Launch geometry and device-memory helpers shared by every kernel family.

use cubecl::prelude::*;
use cubecl::server::Handle;
use rae_core::{Error, Result, Tensor};

use crate::backend::{CubeBackend, CubeStorage};

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
