//! SwiGLU `SiLU(u1) ⊙ u2` on `u = [u1 | u2]` (§3.3) and its backward, vectorised along
//! the hidden axis when `H` allows.

use cubecl::prelude::*;
use rae_core::{Result, Tensor, Unary};

use crate::device::CubeBackend;
use crate::kernels::elementwise::{unary_code, unary_fwd, unary_grad};
use crate::launch::{
    grid_1d, kernel_args, sarr, tarr, u32_arg, vector_width, Variant, CUBE_1D, WIDTHS,
};

#[cube(launch_unchecked)]
fn swiglu_kernel<N: Size>(
    u: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    hv: u32,
    #[comptime] silu: u32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let hv = hv as usize;
        let row = i / hv;
        let j = i % hv;
        let a = u[row * 2 * hv + j];
        let b = u[row * 2 * hv + hv + j];
        y[i] = unary_fwd(a, silu) * b;
    }
}

kernel_args! {
    swiglu_args: swiglu_kernel<N> { u: input V, y: output V, hv: scalar u32; silu: u32 }
}

#[cube(launch_unchecked)]
fn swiglu_backward_kernel<N: Size>(
    u: &Array<Vector<f32, N>>,
    dy: &Array<Vector<f32, N>>,
    du: &mut Array<Vector<f32, N>>,
    hv: u32,
    #[comptime] silu: u32,
) {
    let i = ABSOLUTE_POS;
    if i < dy.len() {
        let hv = hv as usize;
        let row = i / hv;
        let j = i % hv;
        let at = row * 2 * hv + j;
        let a = u[at];
        let b = u[at + hv];
        let d = dy[i];
        du[at] = d * b * unary_grad(a, silu);
        du[at + hv] = d * unary_fwd(a, silu);
    }
}

kernel_args! {
    swiglu_backward_args: swiglu_backward_kernel<N> {
        u: input V,
        dy: input V,
        du: output V,
        hv: scalar u32;
        silu: u32,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// SwiGLU `[rows, 2h] → [rows, h]` (checked by the caller).
pub(crate) fn swiglu<R: Runtime>(
    be: &CubeBackend<R>,
    u: &T<R>,
    rows: usize,
    h: usize,
) -> Result<T<R>> {
    let out = be.alloc(rows * h)?;
    if rows * h > 0 {
        let w = vector_width(be, &[h]);
        let (count, dim) = grid_1d(rows * h / w);
        // SAFETY: unit i < rows·h/w reads u at row·2h/w + j (+ h/w) < rows·2h/w vectors.
        unsafe {
            swiglu_args::Args {
                u: tarr(u),
                y: sarr(&out),
                hv: u32_arg("swiglu width", h / w)?,
                silu: unary_code(Unary::Silu),
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, u.shape().with_last(h))
}

/// Backward of [`swiglu`] (shapes checked by the caller).
pub(crate) fn swiglu_backward<R: Runtime>(
    be: &CubeBackend<R>,
    u: &T<R>,
    dy: &T<R>,
    rows: usize,
    h: usize,
) -> Result<T<R>> {
    let out = be.alloc(rows * 2 * h)?;
    if rows * h > 0 {
        let w = vector_width(be, &[h]);
        let (count, dim) = grid_1d(rows * h / w);
        // SAFETY: unit i < rows·h/w writes du at row·2h/w + j (+ h/w) < rows·2h/w vectors.
        unsafe {
            swiglu_backward_args::Args {
                u: tarr(u),
                dy: tarr(dy),
                du: sarr(&out),
                hv: u32_arg("swiglu width", h / w)?,
                silu: unary_code(Unary::Silu),
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, u.shape().clone())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    let silu = unary_code(Unary::Silu);
    for w in WIDTHS {
        v.push(swiglu_args::variant(&format!("w={w}"), dim, w, silu));
        v.push(swiglu_backward_args::variant(
            &format!("w={w}"),
            dim,
            w,
            silu,
        ));
    }
}
