//! Embedding lookup (`gather_rows`), its backward (`scatter_add_rows`) and the Gaussian
//! Fourier time features of §3.2.
//!
//! The scatter-add is written as a gather so it needs no float atomics (WGSL has none):
//! the host sorts the positions by target row (a stable sort, so each row's sources stay
//! in ascending order) and every output element adds its sources in that order, the order
//! of the CPU backend's loop. The result is therefore deterministic, and bit-identical to
//! the CPU's.

use cubecl::prelude::*;
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::launch::{
    arr_u32, grid_1d, kernel_args, sarr, tarr, u32_arg, vector_width, Variant, CUBE_1D, WIDTHS,
};

#[cube(launch_unchecked)]
fn gather_rows_kernel<N: Size>(
    table: &Array<Vector<f32, N>>,
    idx: &Array<u32>,
    y: &mut Array<Vector<f32, N>>,
    cv: u32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let cv = cv as usize;
        let r = i / cv;
        let j = i % cv;
        y[i] = table[idx[r] as usize * cv + j];
    }
}

kernel_args! {
    gather_rows_args: gather_rows_kernel<N> {
        table: input V,
        idx: input u32,
        y: output V,
        cv: scalar u32;
    }
}

/// `y[v] = Σ_{s ∈ starts[v]..starts[v+1]} dy[order[s]]`, row-wise.
#[cube(launch_unchecked)]
fn scatter_rows_kernel<N: Size>(
    dy: &Array<Vector<f32, N>>,
    order: &Array<u32>,
    starts: &Array<u32>,
    y: &mut Array<Vector<f32, N>>,
    cv: u32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let cv = cv as usize;
        let v = i / cv;
        let j = i % cv;
        let mut acc = Vector::new(0.0f32);
        let mut s = starts[v] as usize;
        let end = starts[v + 1] as usize;
        while s < end {
            acc += dy[order[s] as usize * cv + j];
            s += 1usize;
        }
        y[i] = acc;
    }
}

kernel_args! {
    scatter_rows_args: scatter_rows_kernel<N> {
        dy: input V,
        order: input u32,
        starts: input u32,
        y: output V,
        cv: scalar u32;
    }
}

#[cube(launch_unchecked)]
fn fourier_kernel(t: &Array<f32>, w: &Array<f32>, y: &mut Array<f32>, b: u32, f: u32) {
    let q = ABSOLUTE_POS;
    let f = f as usize;
    if q < b as usize * f {
        let i = q / f;
        let j = q % f;
        // §3.2: the phase is multiplied in the reference's order, t·w·2·π, in f32.
        let phase = t[i] * w[j] * 2.0f32 * f32::new(core::f32::consts::PI);
        y[i * 2 * f + j] = f32::sin(phase);
        y[i * 2 * f + f + j] = f32::cos(phase);
    }
}

kernel_args! {
    fourier_args: fourier_kernel {
        t: input f32,
        w: input f32,
        y: output f32,
        b: scalar u32,
        f: scalar u32;
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// Rows `idx` of `table` `[V, C]` (indices checked by the caller).
pub(crate) fn gather_rows<R: Runtime>(
    be: &CubeBackend<R>,
    table: &T<R>,
    idx: &[u32],
    c: usize,
) -> Result<T<R>> {
    let total = idx.len() * c;
    let out = be.alloc(total)?;
    if total > 0 {
        let w = vector_width(be, &[c]);
        let ih = be.upload_u32(idx);
        let (count, dim) = grid_1d(total / w);
        // SAFETY: every index is below V (checked), so reads stay inside the table; unit i
        // reads idx[i / (C/w)] < idx.len().
        unsafe {
            gather_rows_args::Args {
                table: tarr(table),
                idx: arr_u32(&ih, idx.len()),
                y: sarr(&out),
                cv: u32_arg("gather_rows width", c / w)?,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor_dims(out, &[idx.len(), c])
}

/// `out[idx[i]] += dy[i]` into `[rows, C]` zeros (arguments checked by the caller).
pub(crate) fn scatter_add_rows<R: Runtime>(
    be: &CubeBackend<R>,
    dy: &T<R>,
    idx: &[u32],
    rows: usize,
    c: usize,
) -> Result<T<R>> {
    let total = rows * c;
    let out = be.alloc(total)?;
    if total > 0 {
        // Counting sort of the positions by target row: stable, so sources stay ascending.
        let mut starts = vec![0u32; rows + 1];
        for &i in idx {
            starts[i as usize + 1] += 1;
        }
        for v in 0..rows {
            starts[v + 1] += starts[v];
        }
        let mut next: Vec<u32> = starts[..rows].to_vec();
        let mut order = vec![0u32; idx.len()];
        for (pos, &i) in idx.iter().enumerate() {
            let slot = &mut next[i as usize];
            order[*slot as usize] = pos as u32;
            *slot += 1;
        }
        let w = vector_width(be, &[c]);
        let oh = be.upload_u32(&order);
        let sh = be.upload_u32(&starts);
        let (count, dim) = grid_1d(total / w);
        // SAFETY: starts has rows + 1 entries, order idx.len() entries below idx.len(), and
        // dy holds idx.len()·C floats (checked by the caller).
        unsafe {
            scatter_rows_args::Args {
                dy: tarr(dy),
                order: arr_u32(&oh, order.len().max(1)),
                starts: arr_u32(&sh, starts.len()),
                y: sarr(&out),
                cv: u32_arg("scatter_add_rows width", c / w)?,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor_dims(out, &[rows, c])
}

/// `[sin(2π·t·w) | cos(2π·t·w)]` `[B, 2F]`.
pub(crate) fn fourier_features<R: Runtime>(
    be: &CubeBackend<R>,
    t: &T<R>,
    w: &T<R>,
    b: usize,
    f: usize,
) -> Result<T<R>> {
    let out = be.alloc(b * 2 * f)?;
    if b * f > 0 {
        let (count, dim) = grid_1d(b * f);
        // SAFETY: unit q < B·F reads t[q / F], w[q mod F] and writes two values of row q / F.
        unsafe {
            fourier_args::Args {
                t: tarr(t),
                w: tarr(w),
                y: sarr(&out),
                b: u32_arg("fourier batch", b)?,
                f: u32_arg("fourier features", f)?,
            }
            .launch(be, count, dim)
        }
    }
    be.tensor_dims(out, &[b, 2 * f])
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    for w in WIDTHS {
        v.push(gather_rows_args::variant(&format!("w={w}"), dim, w));
        v.push(scatter_rows_args::variant(&format!("w={w}"), dim, w));
    }
    v.push(fourier_args::variant("", dim));
}
