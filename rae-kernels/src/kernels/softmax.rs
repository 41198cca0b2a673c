//! Softmax over the last axis and its backward `dx = y ⊙ (dy − Σ dy ⊙ y)`, each with a
//! scale folded in for attention: the forward reads `scale·x`, the backward writes
//! `(y ⊙ (dy − Σ dy ⊙ y))·scale` (the same roundings as a separate `scale` op, so the
//! result equals the composite; `scale = 1` is the plain op).
//!
//! One cube per row: a max reduction, then `Σ exp(x − max)` (both in shared memory), then
//! `exp(x − max) · (1 / Σ)`, the CPU backend's sequence.

use cubecl::prelude::*;
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::kernels::reduce::{cube_reduce, mode, ROW_CUBE};
use crate::launch::{kernel_args, sarr, spread, tarr, u32_arg, Variant};

#[cube(launch_unchecked)]
fn softmax_kernel(x: &Array<f32>, y: &mut Array<f32>, rows: u32, c: u32, scale: f32) {
    let mut smem = SharedMemory::<f32>::new(ROW_CUBE as usize);
    let row = CUBE_POS;
    let valid = row < rows as usize;
    let c = c as usize;
    let base = row * c;
    // The lowest finite float (an infinite literal does not survive every compiler).
    let mut mx = f32::new(f32::MIN);
    let mut j = UNIT_POS as usize;
    while j < c {
        if valid {
            mx = mx.max(scale * x[base + j]);
        }
        j += CUBE_DIM as usize;
    }
    let mx = cube_reduce(mx, &mut smem, mode::MAX);
    let mut s = f32::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < c {
        if valid {
            s += f32::exp(scale * x[base + j] - mx);
        }
        j += CUBE_DIM as usize;
    }
    let inv = f32::new(1.0) / cube_reduce(s, &mut smem, mode::SUM);
    if valid {
        let mut j = UNIT_POS as usize;
        while j < c {
            y[base + j] = f32::exp(scale * x[base + j] - mx) * inv;
            j += CUBE_DIM as usize;
        }
    }
}

kernel_args! {
    softmax_args: softmax_kernel {
        x: input f32,
        y: output f32,
        rows: scalar u32,
        c: scalar u32,
        scale: scalar f32;
    }
}

#[cube(launch_unchecked)]
fn softmax_backward_kernel(
    y: &Array<f32>,
    dy: &Array<f32>,
    dx: &mut Array<f32>,
    rows: u32,
    c: u32,
    scale: f32,
) {
    let mut smem = SharedMemory::<f32>::new(ROW_CUBE as usize);
    let row = CUBE_POS;
    let valid = row < rows as usize;
    let c = c as usize;
    let base = row * c;
    let mut s = f32::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < c {
        if valid {
            s += y[base + j] * dy[base + j];
        }
        j += CUBE_DIM as usize;
    }
    let dot = cube_reduce(s, &mut smem, mode::SUM);
    if valid {
        let mut j = UNIT_POS as usize;
        while j < c {
            dx[base + j] = y[base + j] * (dy[base + j] - dot) * scale;
            j += CUBE_DIM as usize;
        }
    }
}

kernel_args! {
    softmax_backward_args: softmax_backward_kernel {
        y: input f32,
        dy: input f32,
        dx: output f32,
        rows: scalar u32,
        c: scalar u32,
        scale: scalar f32;
    }
}

type T<R> = Tensor<CubeBackend<R>>;

fn rows_of<R: Runtime>(x: &T<R>) -> (usize, usize) {
    let c = x.shape().last();
    (x.numel().checked_div(c).unwrap_or(0), c)
}

/// Softmax of `scale·x` over the last axis.
pub(crate) fn softmax<R: Runtime>(be: &CubeBackend<R>, x: &T<R>, scale: f32) -> Result<T<R>> {
    let (rows, c) = rows_of(x);
    let out = be.alloc(x.numel())?;
    if rows > 0 {
        // SAFETY: one cube per row; reads and writes at row·c + j < rows·c.
        unsafe {
            softmax_args::Args {
                x: tarr(x),
                y: sarr(&out),
                rows: u32_arg("softmax rows", rows)?,
                c: u32_arg("softmax width", c)?,
                scale,
            }
            .launch(be, spread(rows), CubeDim::new_1d(ROW_CUBE))
        }
    }
    be.tensor(out, x.shape().clone())
}

/// Backward of [`softmax`] from its output `y`, times `scale` (shapes checked by the
/// caller).
pub(crate) fn softmax_backward<R: Runtime>(
    be: &CubeBackend<R>,
    y: &T<R>,
    dy: &T<R>,
    scale: f32,
) -> Result<T<R>> {
    let (rows, c) = rows_of(y);
    let out = be.alloc(y.numel())?;
    if rows > 0 {
        // SAFETY: one cube per row; reads and writes at row·c + j < rows·c.
        unsafe {
            softmax_backward_args::Args {
                y: tarr(y),
                dy: tarr(dy),
                dx: sarr(&out),
                rows: u32_arg("softmax rows", rows)?,
                c: u32_arg("softmax width", c)?,
                scale,
            }
            .launch(be, spread(rows), CubeDim::new_1d(ROW_CUBE))
        }
    }
    be.tensor(out, y.shape().clone())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(ROW_CUBE);
    v.push(softmax_args::variant("", dim));
    v.push(softmax_backward_args::variant("", dim));
}
