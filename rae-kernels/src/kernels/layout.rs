//! Layout ops: patchify / unpatchify (§2.6.2, §3.1), the `[A, B, C, D] → [A, C, B, D]`
//! permute (head split and merge), middle-axis slices and concatenations. Each output
//! element is computed by one unit from its source index; the contiguous copies (permute,
//! slice, concat) move whole vectors when the innermost extent allows.

use cubecl::prelude::*;
use rae_core::{PatchOrder, Result, Tensor};

use crate::device::{CubeBackend, CubeStorage};
use crate::launch::{
    grid_1d, kernel_args, sarr, tarr, u32_arg, vector_width, Variant, CUBE_1D, WIDTHS,
};

/// Index inside a flattened patch of `(channel, row, column)` for the order
/// (`channel_last` false: `(ci·p + r)·p + s`; true: `(r·p + s)·C + ci`).
#[cube]
fn patch_index(
    ci: usize,
    r: usize,
    s: usize,
    c: usize,
    p: usize,
    #[comptime] channel_last: bool,
) -> usize {
    let mut k = (ci * p + r) * p + s;
    if channel_last {
        k = (r * p + s) * c + ci;
    }
    k
}

/// Image `[B, C, H, W]` ↔ tokens `[B, gh·gw, p·p·C]`; one unit per image element. With
/// `to_tokens` the image is the source, else the destination.
#[cube(launch_unchecked)]
fn patch_kernel(
    src: &Array<f32>,
    dst: &mut Array<f32>,
    c: u32,
    h: u32,
    w: u32,
    p: u32,
    total: u32,
    #[comptime] channel_last: bool,
    #[comptime] to_tokens: bool,
) {
    let q = ABSOLUTE_POS;
    if q < total as usize {
        let c = c as usize;
        let h = h as usize;
        let w = w as usize;
        let p = p as usize;
        // q is the image index ((bi·C + ci)·H + y)·W + x.
        let x = q % w;
        let y = (q / w) % h;
        let ci = (q / (w * h)) % c;
        let bi = q / (w * h * c);
        let gw = w / p;
        let gh = h / p;
        let tok = (y / p) * gw + x / p;
        let k = patch_index(ci, y % p, x % p, c, p, channel_last);
        let t = (bi * gh * gw + tok) * (p * p * c) + k;
        if to_tokens {
            dst[t] = src[q];
        } else {
            dst[q] = src[t];
        }
    }
}

kernel_args! {
    patch_args: patch_kernel {
        src: input f32,
        dst: output f32,
        c: scalar u32,
        h: scalar u32,
        w: scalar u32,
        p: scalar u32,
        total: scalar u32;
        channel_last: bool,
        to_tokens: bool,
    }
}

#[cube(launch_unchecked)]
fn permute0213_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    b: u32,
    c: u32,
    dv: u32,
) {
    let q = ABSOLUTE_POS;
    if q < y.len() {
        let b = b as usize;
        let c = c as usize;
        let dv = dv as usize;
        // q = ((i·C + k)·B + j)·D + d over the output [A, C, B, D].
        let d = q % dv;
        let j = (q / dv) % b;
        let k = (q / (dv * b)) % c;
        let i = q / (dv * b * c);
        y[q] = x[((i * b + j) * c + k) * dv + d];
    }
}

kernel_args! {
    permute0213_args: permute0213_kernel<N> {
        x: input V,
        y: output V,
        b: scalar u32,
        c: scalar u32,
        dv: scalar u32;
    }
}

/// Copies the `[outer, mid, inner_v]` block `x` into rows `off .. off + mid` of the
/// `[outer, total, inner_v]` output (`concat`), or rows `off ..` of `x` (a
/// `[outer, total, inner_v]` view) into the output (`slice`, `gather_src = true`).
#[cube(launch_unchecked)]
fn mid_copy_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    mid: u32,
    total: u32,
    off: u32,
    inner_v: u32,
    count: u32,
    #[comptime] gather_src: bool,
) {
    let q = ABSOLUTE_POS;
    if q < count as usize {
        let inner_v = inner_v as usize;
        let mid = mid as usize;
        let e = q % inner_v;
        let m = (q / inner_v) % mid;
        let o = q / (inner_v * mid);
        let wide = (o * total as usize + off as usize + m) * inner_v + e;
        if gather_src {
            y[q] = x[wide];
        } else {
            y[wide] = x[q];
        }
    }
}

kernel_args! {
    mid_copy_args: mid_copy_kernel<N> {
        x: input V,
        y: output V,
        mid: scalar u32,
        total: scalar u32,
        off: scalar u32,
        inner_v: scalar u32,
        count: scalar u32;
        gather_src: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// Patchify (`to_tokens`) or unpatchify of `[B, C, H, W]` with patch `p`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch<R: Runtime>(
    be: &CubeBackend<R>,
    src: &T<R>,
    (c, h, w): (usize, usize, usize),
    p: usize,
    order: PatchOrder,
    to_tokens: bool,
    out_dims: &[usize],
) -> Result<T<R>> {
    let total = src.numel();
    let out = be.alloc(total)?;
    if total > 0 {
        let (count, dim) = grid_1d(total);
        // SAFETY: the image index q and its token index are both below B·C·H·W, the size
        // of source and destination.
        unsafe {
            patch_args::Args {
                src: tarr(src),
                dst: sarr(&out),
                c: u32_arg("patchify channels", c)?,
                h: u32_arg("patchify height", h)?,
                w: u32_arg("patchify width", w)?,
                p: u32_arg("patch size", p)?,
                total: u32_arg("patchify size", total)?,
                channel_last: order == PatchOrder::ChannelLast,
                to_tokens,
            }
            .launch(be, count, dim)
        }
    }
    be.tensor_dims(out, out_dims)
}

/// `[A, B, C, D] → [A, C, B, D]`.
pub(crate) fn permute0213<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    [a, b, c, d]: [usize; 4],
) -> Result<T<R>> {
    let total = x.numel();
    let out = be.alloc(total)?;
    if total > 0 {
        let w = vector_width(be, &[d]);
        let (count, dim) = grid_1d(total / w);
        // SAFETY: a bijection of [0, total/w) onto itself.
        unsafe {
            permute0213_args::Args {
                x: tarr(x),
                y: sarr(&out),
                b: u32_arg("permute0213 dim 1", b)?,
                c: u32_arg("permute0213 dim 2", c)?,
                dv: u32_arg("permute0213 dim 3", d / w)?,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor_dims(out, &[a, c, b, d])
}

/// Launches [`mid_copy_kernel`] over `count = outer·mid·inner` floats.
#[allow(clippy::too_many_arguments)]
fn mid_copy<R: Runtime>(
    be: &CubeBackend<R>,
    x: &CubeStorage,
    x_len: usize,
    y: &CubeStorage,
    [outer, mid, inner]: [usize; 3],
    total: usize,
    off: usize,
    gather_src: bool,
) -> Result<()> {
    let count = outer * mid * inner;
    if count == 0 {
        return Ok(());
    }
    let w = vector_width(be, &[inner]);
    let (grid, dim) = grid_1d(count / w);
    // SAFETY: the narrow index q < count and the wide index
    // (o·total + off + m)·inner + e < outer·total·inner (off + mid ≤ total) stay inside x
    // and y, whose lengths the callers size that way.
    unsafe {
        mid_copy_args::Args {
            x: crate::launch::arr(x.handle(), x_len),
            y: sarr(y),
            mid: u32_arg("slice/concat length", mid)?,
            total: u32_arg("slice/concat axis", total)?,
            off: u32_arg("slice/concat offset", off)?,
            inner_v: u32_arg("slice/concat inner", inner / w)?,
            count: u32_arg("slice/concat size", count / w)?,
            gather_src,
        }
        .launch(be, grid, dim, w)
    }
    Ok(())
}

/// Rows `start .. start + len` of the middle axis of `dims` (checked by the caller).
pub(crate) fn slice_mid<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    [a, b, c]: [usize; 3],
    start: usize,
    len: usize,
) -> Result<T<R>> {
    let out = be.alloc(a * len * c)?;
    mid_copy(
        be,
        x.storage(),
        x.numel(),
        &out,
        [a, len, c],
        b,
        start,
        true,
    )?;
    be.tensor_dims(out, &[a, len, c])
}

/// Concatenation along the middle axis (sizes from `check::concat_mid`).
pub(crate) fn concat_mid<R: Runtime>(
    be: &CubeBackend<R>,
    xs: &[&T<R>],
    mids: &[usize],
    outer: usize,
    inner: usize,
) -> Result<T<R>> {
    let total: usize = mids.iter().sum();
    let out = be.alloc(outer * total * inner)?;
    let mut off = 0;
    for (x, &m) in xs.iter().zip(mids) {
        mid_copy(
            be,
            x.storage(),
            x.numel(),
            &out,
            [outer, m, inner],
            total,
            off,
            false,
        )?;
        off += m;
    }
    be.tensor_dims(out, &[outer, total, inner])
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    for channel_last in [false, true] {
        for to_tokens in [false, true] {
            v.push(patch_args::variant(
                &format!("channel_last={channel_last} to_tokens={to_tokens}"),
                dim,
                channel_last,
                to_tokens,
            ));
        }
    }
    for w in WIDTHS {
        v.push(permute0213_args::variant(&format!("w={w}"), dim, w));
        for gather_src in [false, true] {
            v.push(mid_copy_args::variant(
                &format!("w={w} gather={gather_src}"),
                dim,
                w,
                gather_src,
            ));
        }
    }
}
