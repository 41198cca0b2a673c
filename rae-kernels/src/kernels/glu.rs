//! SwiGLU `SiLU(u1) ⊙ u2` on `u = [u1 | u2]` (§3.3) and its backward, vectorised along
//! the hidden axis when `H` allows.

use cubecl::prelude::*;
use rae_core::{Result, Tensor, Unary};

use crate::backend::CubeBackend;
use crate::kernels::elementwise::{unary_code, unary_fwd, unary_grad};
use crate::launch::{grid_1d, sarr, tarr, u32_arg, vector_width, CUBE_1D};
use crate::lowering::{input, output, scalar, Variant, WIDTHS};

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
            swiglu_kernel::launch_unchecked::<R>(
                be.client(),
                count,
                dim,
                w,
                tarr(u),
                sarr(&out),
                u32_arg("swiglu width", h / w)?,
                unary_code(Unary::Silu),
            )
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
            swiglu_backward_kernel::launch_unchecked::<R>(
                be.client(),
                count,
                dim,
                w,
                tarr(u),
                tarr(dy),
                sarr(&out),
                u32_arg("swiglu width", h / w)?,
                unary_code(Unary::Silu),
            )
        }
    }
    be.tensor(out, u.shape().clone())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    let silu = unary_code(Unary::Silu);
    for w in WIDTHS {
        v.push(Variant::new(
            format!("swiglu_kernel w={w}"),
            dim,
            move |b| {
                type V = Vector<f32, swiglu_kernel::N>;
                b.scope.register_size::<swiglu_kernel::N>(w);
                let (u, y, hv) = (input::<V>(b), output::<V>(b), scalar::<u32>(b));
                swiglu_kernel::expand::<swiglu_kernel::N>(&mut b.scope, w, u, y, hv, silu);
            },
        ));
        v.push(Variant::new(
            format!("swiglu_backward_kernel w={w}"),
            dim,
            move |b| {
                type V = Vector<f32, swiglu_backward_kernel::N>;
                b.scope.register_size::<swiglu_backward_kernel::N>(w);
                let (u, dy, du) = (input::<V>(b), input::<V>(b), output::<V>(b));
                let hv = scalar::<u32>(b);
                swiglu_backward_kernel::expand::<swiglu_backward_kernel::N>(
                    &mut b.scope,
                    w,
                    u,
                    dy,
                    du,
                    hv,
                    silu,
                );
            },
        ));
    }
}
