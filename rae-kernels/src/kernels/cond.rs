//! Broadcast conditioning: `bcast_affine` (bias adds, LayerScale, normalisations), adaLN
//! `modulate` `x ⊙ (1 + scale) + shift` and `gate` `x ⊙ g` (§3.3), with the backward
//! reductions over the tokens that share a conditioning row.
//!
//! Conditioning row of token row `r = b·N + n`: `b·Nc + n / (N/Nc)`, so the tokens of one
//! conditioning row are consecutive and their gradient is the column reduction of the
//! `[B·Nc, N/Nc, C]` view.

use cubecl::prelude::*;
use rae_core::check::CondDims;
use rae_core::{Result, Tensor};

use crate::device::{CubeBackend, CubeStorage};
use crate::kernels::reduce::{launch_cols, mode, ColInputs};
use crate::launch::{
    grid_1d, kernel_args, sarr, tarr, u32_arg, vector_width, Variant, CUBE_1D, WIDTHS,
};

/// `y = x · a[m] + b[m]` on the `[outer, mid, inner]` view, `inner_v = inner / N`.
#[cube(launch_unchecked)]
fn bcast_affine_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    a: &Array<f32>,
    b: &Array<f32>,
    y: &mut Array<Vector<f32, N>>,
    mid: u32,
    inner_v: u32,
    #[comptime] has_a: bool,
    #[comptime] has_b: bool,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let m = (i / inner_v as usize) % mid as usize;
        let mut v = x[i];
        if has_a {
            v *= Vector::new(a[m]);
        }
        if has_b {
            v += Vector::new(b[m]);
        }
        y[i] = v;
    }
}

kernel_args! {
    bcast_affine_args: bcast_affine_kernel<N> {
        x: input V,
        a: input f32,
        b: input f32,
        y: output V,
        mid: scalar u32,
        inner_v: scalar u32;
        has_a: bool,
        has_b: bool,
    }
}

/// `y = x ⊙ (1 + scale[c]) + shift[c]` (modulate) or `y = x ⊙ g[c]` (gate, `gate = true`,
/// `g` passed as `scale`), `c` the conditioning row; `cv = C / N`.
#[cube(launch_unchecked)]
fn cond_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    shift: &Array<Vector<f32, N>>,
    scale: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    tokens: u32,
    cond_tokens: u32,
    cv: u32,
    #[comptime] has_shift: bool,
    #[comptime] has_scale: bool,
    #[comptime] gate: bool,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let cv = cv as usize;
        let n = tokens as usize;
        let nc = cond_tokens as usize;
        let row = i / cv;
        let j = i % cv;
        let crow = (row / n) * nc + (row % n) / (n / nc);
        let at = crow * cv + j;
        let mut v = x[i];
        if gate {
            v *= scale[at];
        } else {
            if has_scale {
                v *= scale[at] + Vector::new(1.0f32);
            }
            if has_shift {
                v += shift[at];
            }
        }
        y[i] = v;
    }
}

kernel_args! {
    cond_args: cond_kernel<N> {
        x: input V,
        shift: input V,
        scale: input V,
        y: output V,
        tokens: scalar u32,
        cond_tokens: scalar u32,
        cv: scalar u32;
        has_shift: bool,
        has_scale: bool,
        gate: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// [`rae_core::Backend::bcast_affine`] (arguments checked by the caller).
pub(crate) fn bcast_affine<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    a: Option<&T<R>>,
    b: Option<&T<R>>,
    dims: [usize; 3],
) -> Result<T<R>> {
    let n = x.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[dims[2]]);
        let (count, dim) = grid_1d(n / w);
        let av = be.or_placeholder(a.map(|t| t.storage()));
        let bv = be.or_placeholder(b.map(|t| t.storage()));
        // SAFETY: x/y hold n floats; a and b are read at m < mid (their checked length)
        // only when present.
        unsafe {
            bcast_affine_args::Args {
                x: tarr(x),
                a: sarr(av),
                b: sarr(bv),
                y: sarr(&out),
                mid: u32_arg("bcast_affine mid", dims[1])?,
                inner_v: u32_arg("bcast_affine inner", dims[2] / w)?,
                has_a: a.is_some(),
                has_b: b.is_some(),
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// `modulate` (or `gate` when `gate`, with `g` passed as `scale`).
pub(crate) fn cond<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    shift: Option<&T<R>>,
    scale: Option<&T<R>>,
    d: &CondDims,
    gate: bool,
) -> Result<T<R>> {
    let total = x.numel();
    let out = be.alloc(total)?;
    if total > 0 {
        let w = vector_width(be, &[d.c]);
        let (count, dim) = grid_1d(total / w);
        let sh = be.or_placeholder(shift.map(|t| t.storage()));
        let sc = be.or_placeholder(scale.map(|t| t.storage()));
        // SAFETY: x/y hold B·N·C floats; shift/scale hold B·Nc·C and are read at
        // crow·C + j with crow < B·Nc, only when present.
        unsafe {
            cond_args::Args {
                x: tarr(x),
                shift: sarr(sh),
                scale: sarr(sc),
                y: sarr(&out),
                tokens: u32_arg("modulate tokens", d.n)?,
                cond_tokens: u32_arg("modulate conditioning tokens", d.nc)?,
                cv: u32_arg("modulate channels", d.c / w)?,
                has_shift: shift.is_some(),
                has_scale: scale.is_some(),
                gate,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// `Σ dy` (or `Σ dy ⊙ x` with `x`) over the tokens of each conditioning row:
/// `[B, Nc, C]`.
pub(crate) fn cond_reduce<R: Runtime>(
    be: &CubeBackend<R>,
    dy: &T<R>,
    x: Option<&T<R>>,
    d: &CondDims,
) -> Result<T<R>> {
    let inp = ColInputs {
        x: dy.storage(),
        z: x.map(|t| t.storage()),
        mean: None,
        rstd: None,
    };
    let op = if x.is_some() { mode::SUM_XZ } else { mode::SUM };
    let out: CubeStorage = launch_cols(be, &inp, [d.b * d.nc, d.repeat(), d.c], op, None)?;
    be.tensor_dims(out, &[d.b, d.nc, d.c])
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    for w in WIDTHS {
        for (has_a, has_b) in [(false, false), (false, true), (true, false), (true, true)] {
            v.push(bcast_affine_args::variant(
                &format!("w={w} a={has_a} b={has_b}"),
                dim,
                w,
                has_a,
                has_b,
            ));
            let (has_shift, has_scale) = (has_a, has_b);
            for gate in [false, true] {
                if gate && (has_shift || !has_scale) {
                    continue;
                }
                v.push(cond_args::variant(
                    &format!("w={w} shift={has_shift} scale={has_scale} gate={gate}"),
                    dim,
                    w,
                    has_shift,
                    has_scale,
                    gate,
                ));
            }
        }
    }
}
