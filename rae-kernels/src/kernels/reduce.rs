//! Reductions over the middle axis of an `[outer, mid, inner]` view ([`Reduce`]), and the
//! shared-memory cube reduction that the row kernels (norms, softmax) use.
//!
//! Two kernels cover every view: with `inner = 1` one cube reduces one contiguous row
//! (units stride over it, then a tree in shared memory); with `inner > 1` a cube of
//! 32 × 8 units owns 32 adjacent outputs, each column of 8 units strides over `mid`, and
//! the 8 partial sums meet in shared memory. Long reductions are split into segments whose
//! partial sums a second pass adds, so a `sum_all` of ten million values still spreads
//! over many cubes. Only shared memory is used (no plane operations), so the kernels run
//! unchanged on adapters without subgroup support (lavapipe).

use cubecl::prelude::*;
use rae_core::{Reduce, Result, Tensor};

use crate::device::{CubeBackend, CubeStorage};
use crate::launch::{kernel_args, sarr, spread, u32_arg, Variant};

/// Units per cube of the row kernels (a power of two).
pub(crate) const ROW_CUBE: u32 = 256;

/// Comptime codes of the reduction modes.
pub(crate) mod mode {
    /// `Σ x`
    pub const SUM: u32 = 0;
    /// `Σ x²`
    pub const SUM_SQ: u32 = 1;
    /// `Σ x·z`
    pub const SUM_XZ: u32 = 2;
    /// `Σ dy·(x − mean[m])·rstd[m]`: the scale gradient of a norm (x = dy, z = input).
    pub const NORM_DW: u32 = 3;
    /// `max x`
    pub const MAX: u32 = 4;
    /// `Σ dy·x·rstd[m]`: the weight gradient of an RMSNorm (no mean to subtract).
    pub const RMS_DW: u32 = 5;
}

/// Reduces `value` over the cube (sum, or max with `op == mode::MAX`); every unit gets
/// the result. `smem` must hold `CUBE_DIM` floats, a power of two. Units of a cube must
/// all call it (it synchronises the cube).
#[cube]
pub(crate) fn cube_reduce(value: f32, smem: &mut SharedMemory<f32>, #[comptime] op: u32) -> f32 {
    let t = UNIT_POS as usize;
    smem[t] = value;
    sync_cube();
    let mut stride = (CUBE_DIM / 2) as usize;
    while stride > 0 {
        if t < stride {
            if op == mode::MAX {
                smem[t] = smem[t].max(smem[t + stride]);
            } else {
                smem[t] += smem[t + stride];
            }
        }
        sync_cube();
        stride /= 2usize;
    }
    let r = smem[0];
    sync_cube();
    r
}

/// One cube per (row, segment) of a `[rows, mid]` matrix: `out[row·segs + seg]` is the
/// reduction of `x[row, seg·seg_len ..][..seg_len]`, times `post` when `scale_out`.
#[cube(launch_unchecked)]
fn row_reduce_kernel(
    x: &Array<f32>,
    out: &mut Array<f32>,
    rows: u32,
    mid: u32,
    seg_len: u32,
    segs: u32,
    post: f32,
    #[comptime] op: u32,
    #[comptime] scale_out: bool,
) {
    let mut smem = SharedMemory::<f32>::new(ROW_CUBE as usize);
    let cid = CUBE_POS;
    let segs = segs as usize;
    let row = cid / segs;
    let seg = cid % segs;
    let valid = row < rows as usize;
    let start = seg * seg_len as usize;
    let end = min(start + seg_len as usize, mid as usize);
    let base = row * mid as usize;
    let mut acc = f32::new(0.0);
    let mut j = start + UNIT_POS as usize;
    while j < end {
        if valid {
            let v = x[base + j];
            if op == mode::SUM_SQ {
                acc += v * v;
            } else {
                acc += v;
            }
        }
        j += CUBE_DIM as usize;
    }
    let total = cube_reduce(acc, &mut smem, mode::SUM);
    if valid && UNIT_POS == 0 {
        if scale_out {
            out[cid] = total * post;
        } else {
            out[cid] = total;
        }
    }
}

kernel_args! {
    row_reduce_args: row_reduce_kernel {
        x: input f32,
        out: output f32,
        rows: scalar u32,
        mid: scalar u32,
        seg_len: scalar u32,
        segs: scalar u32,
        post: scalar f32;
        op: u32,
        scale_out: bool,
    }
}

/// Column reduction of an `[outer, mid, inner]` view in cubes of 32 × 8 units, `mid`
/// split into `segs` segments: `out[(o·segs + seg)·inner + i]`.
#[cube(launch_unchecked)]
fn col_reduce_kernel(
    x: &Array<f32>,
    z: &Array<f32>,
    mean: &Array<f32>,
    rstd: &Array<f32>,
    out: &mut Array<f32>,
    outer: u32,
    mid: u32,
    inner: u32,
    seg_len: u32,
    segs: u32,
    tiles: u32,
    post: f32,
    #[comptime] op: u32,
    #[comptime] scale_out: bool,
) {
    let mut smem = SharedMemory::<f32>::new(256usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let cid = CUBE_POS;
    let tiles = tiles as usize;
    let segs = segs as usize;
    let inner = inner as usize;
    let mid = mid as usize;
    let tile = cid % tiles;
    let rest = cid / tiles;
    let seg = rest % segs;
    let o = rest / segs;
    let i = tile * 32usize + tx;
    let valid = o < outer as usize && i < inner;
    let start = seg * seg_len as usize;
    let end = min(start + seg_len as usize, mid);
    let mut acc = f32::new(0.0);
    let mut m = start + ty;
    while m < end {
        if valid {
            let at = (o * mid + m) * inner + i;
            let v = x[at];
            if op == mode::SUM_SQ {
                acc += v * v;
            } else if op == mode::SUM_XZ {
                acc += v * z[at];
            } else if op == mode::NORM_DW {
                let r = o * mid + m;
                acc += v * ((z[at] - mean[r]) * rstd[r]);
            } else if op == mode::RMS_DW {
                acc += v * (z[at] * rstd[o * mid + m]);
            } else {
                acc += v;
            }
        }
        m += 8usize;
    }
    smem[ty * 32usize + tx] = acc;
    sync_cube();
    let mut stride = 4usize.runtime();
    while stride > 0 {
        if ty < stride {
            smem[ty * 32usize + tx] += smem[(ty + stride) * 32usize + tx];
        }
        sync_cube();
        stride /= 2usize;
    }
    if valid && ty == 0 {
        let r = smem[tx];
        let dst = (o * segs + seg) * inner + i;
        if scale_out {
            out[dst] = r * post;
        } else {
            out[dst] = r;
        }
    }
}

kernel_args! {
    col_reduce_args: col_reduce_kernel {
        x: input f32,
        z: input f32,
        mean: input f32,
        rstd: input f32,
        out: output f32,
        outer: scalar u32,
        mid: scalar u32,
        inner: scalar u32,
        seg_len: scalar u32,
        segs: scalar u32,
        tiles: scalar u32,
        post: scalar f32;
        op: u32,
        scale_out: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// Segments so that a reduction of `cubes` independent outputs (per segment) over `mid`
/// values keeps at least a few hundred cubes busy, with segments of at least `min_len`.
fn segments(cubes: usize, mid: usize, min_len: usize) -> (usize, usize) {
    let want = (512 / cubes.max(1)).max(1);
    let max_segs = mid.div_ceil(min_len).max(1);
    let segs = want.min(max_segs);
    let seg_len = mid.div_ceil(segs).max(min_len.min(mid)).max(1);
    (mid.div_ceil(seg_len).max(1), seg_len)
}

/// Launches the row kernel over `[rows, mid]` into `rows·segs` floats.
fn launch_rows<R: Runtime>(
    be: &CubeBackend<R>,
    x: &CubeStorage,
    rows: usize,
    mid: usize,
    op: u32,
    post: Option<f32>,
) -> Result<CubeStorage> {
    let (segs, seg_len) = if rows >= 256 {
        (1, mid.max(1))
    } else {
        segments(rows, mid, 4096)
    };
    let out = be.alloc(rows * segs)?;
    if rows * segs > 0 {
        // SAFETY: x holds rows·mid floats; every read is below that (row < rows, j < mid),
        // every write is at a cube index below rows·segs.
        unsafe {
            row_reduce_args::Args {
                x: sarr(x),
                out: sarr(&out),
                rows: u32_arg("reduce rows", rows)?,
                mid: u32_arg("reduce length", mid)?,
                seg_len: u32_arg("reduce segment", seg_len)?,
                segs: u32_arg("reduce segments", segs)?,
                post: post.unwrap_or(1.0),
                op,
                scale_out: post.is_some() && segs == 1,
            }
            .launch(be, spread(rows * segs), CubeDim::new_1d(ROW_CUBE))
        }
    }
    if segs == 1 {
        return Ok(out);
    }
    launch_rows(be, &out, rows, segs, mode::SUM, post)
}

/// The inputs of a column reduction (`z`, `mean`, `rstd` only for the modes that read
/// them).
pub(crate) struct ColInputs<'a> {
    /// The reduced values `[outer, mid, inner]`.
    pub x: &'a CubeStorage,
    /// The second factor of [`mode::SUM_XZ`] / the norm input of [`mode::NORM_DW`].
    pub z: Option<&'a CubeStorage>,
    /// Row means `[outer·mid]` for [`mode::NORM_DW`].
    pub mean: Option<&'a CubeStorage>,
    /// Row reciprocal deviations `[outer·mid]` for [`mode::NORM_DW`] and [`mode::RMS_DW`].
    pub rstd: Option<&'a CubeStorage>,
}

/// Column reduction of the `[outer, mid, inner]` view: `[outer, inner]` floats, times
/// `post` when given.
pub(crate) fn launch_cols<R: Runtime>(
    be: &CubeBackend<R>,
    inp: &ColInputs<'_>,
    dims: [usize; 3],
    op: u32,
    post: Option<f32>,
) -> Result<CubeStorage> {
    let [outer, mid, inner] = dims;
    let tiles = inner.div_ceil(32).max(1);
    let (segs, seg_len) = segments(tiles * outer, mid, 256);
    let out = be.alloc(outer * segs * inner)?;
    if outer * inner > 0 {
        let z = be.or_placeholder(inp.z);
        let mean = be.or_placeholder(inp.mean);
        let rstd = be.or_placeholder(inp.rstd);
        // SAFETY: reads are at (o·mid + m)·inner + i < outer·mid·inner of x (and z), and at
        // o·mid + m of mean/rstd, which the modes that read them size accordingly; writes
        // stay below outer·segs·inner.
        unsafe {
            col_reduce_args::Args {
                x: sarr(inp.x),
                z: sarr(z),
                mean: sarr(mean),
                rstd: sarr(rstd),
                out: sarr(&out),
                outer: u32_arg("reduce outer", outer)?,
                mid: u32_arg("reduce length", mid)?,
                inner: u32_arg("reduce inner", inner)?,
                seg_len: u32_arg("reduce segment", seg_len)?,
                segs: u32_arg("reduce segments", segs)?,
                tiles: u32_arg("reduce tiles", tiles)?,
                post: post.unwrap_or(1.0),
                op,
                scale_out: post.is_some() && segs == 1,
            }
            .launch(be, spread(tiles * outer * segs), CubeDim::new_2d(32, 8))
        }
    }
    if segs == 1 {
        return Ok(out);
    }
    let second = ColInputs {
        x: &out,
        z: None,
        mean: None,
        rstd: None,
    };
    launch_cols(be, &second, [outer, segs, inner], mode::SUM, post)
}

/// [`Reduce`] over the middle axis of `dims` (checked by the caller) → `[outer, inner]`.
pub(crate) fn reduce<R: Runtime>(
    be: &CubeBackend<R>,
    op: Reduce,
    x: &T<R>,
    dims: [usize; 3],
) -> Result<T<R>> {
    let [outer, mid, inner] = dims;
    let code = match op {
        Reduce::SumSq => mode::SUM_SQ,
        Reduce::Sum | Reduce::Mean => mode::SUM,
    };
    // The CPU backend multiplies by the f32 reciprocal 1/mid (and leaves an empty mean 0).
    let post = (op == Reduce::Mean && mid > 0).then(|| 1.0 / mid as f32);
    let out = if mid == 0 {
        crate::kernels::elementwise::fill(be, outer * inner, 0.0)?
    } else if inner == 1 {
        launch_rows(be, x.storage(), outer, mid, code, post)?
    } else {
        let inp = ColInputs {
            x: x.storage(),
            z: None,
            mean: None,
            rstd: None,
        };
        launch_cols(be, &inp, dims, code, post)?
    };
    be.tensor_dims(out, &[outer, inner])
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for scale_out in [false, true] {
        for op in [mode::SUM, mode::SUM_SQ] {
            v.push(row_reduce_args::variant(
                &format!("op={op} scale={scale_out}"),
                CubeDim::new_1d(ROW_CUBE),
                op,
                scale_out,
            ));
        }
        for op in [
            mode::SUM,
            mode::SUM_SQ,
            mode::SUM_XZ,
            mode::NORM_DW,
            mode::RMS_DW,
        ] {
            v.push(col_reduce_args::variant(
                &format!("op={op} scale={scale_out}"),
                CubeDim::new_2d(32, 8),
                op,
                scale_out,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_cover_the_axis_without_empty_segments() {
        for cubes in [1usize, 3, 100, 512, 10_000] {
            for mid in [1usize, 7, 256, 257, 4096, 20_000, 1_000_000] {
                for min_len in [64usize, 256, 4096] {
                    let (segs, len) = segments(cubes, mid, min_len);
                    assert!(segs >= 1 && len >= 1);
                    assert!(segs * len >= mid, "{cubes} {mid} {min_len}: {segs}×{len}");
                    assert!(
                        (segs - 1) * len < mid,
                        "{cubes} {mid} {min_len}: empty segment"
                    );
                    if segs > 1 {
                        assert!(
                            len >= min_len.min(mid),
                            "{cubes} {mid}: short segment {len}"
                        );
                    }
                }
            }
        }
    }
}
