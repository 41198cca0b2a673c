//! Optimiser updates: AdamW (PyTorch semantics, the CPU backend's operation order) and the
//! EMA of the weights. Both write new buffers, so a tensor cloned before the update (an
//! EMA copy, a saved activation) keeps its values.

use cubecl::prelude::*;
use rae_core::backend::AdamWStep;
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::launch::{grid_1d, kernel_args, sarr, tarr, vector_width, Variant, CUBE_1D, WIDTHS};

#[cube(launch_unchecked)]
fn adamw_kernel<N: Size>(
    p: &Array<Vector<f32, N>>,
    g: &Array<Vector<f32, N>>,
    m: &Array<Vector<f32, N>>,
    v: &Array<Vector<f32, N>>,
    p_out: &mut Array<Vector<f32, N>>,
    m_out: &mut Array<Vector<f32, N>>,
    v_out: &mut Array<Vector<f32, N>>,
    grad_scale: f32,
    decay: f32,
    one_minus_b1: f32,
    beta2: f32,
    one_minus_b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
) {
    let i = ABSOLUTE_POS;
    if i < p_out.len() {
        let gi = g[i] * Vector::new(grad_scale);
        let pi = p[i] * Vector::new(decay);
        let mi = m[i] + (gi - m[i]) * Vector::new(one_minus_b1);
        let vi = v[i] * Vector::new(beta2) + gi * gi * Vector::new(one_minus_b2);
        let denom = Vector::sqrt(vi) / Vector::new(bc2_sqrt) + Vector::new(eps);
        p_out[i] = pi - Vector::new(step_size) * mi / denom;
        m_out[i] = mi;
        v_out[i] = vi;
    }
}

kernel_args! {
    adamw_args: adamw_kernel<N> {
        p: input V,
        g: input V,
        m: input V,
        v: input V,
        p_out: output V,
        m_out: output V,
        v_out: output V,
        grad_scale: scalar f32,
        decay: scalar f32,
        one_minus_b1: scalar f32,
        beta2: scalar f32,
        one_minus_b2: scalar f32,
        step_size: scalar f32,
        bc2_sqrt: scalar f32,
        eps: scalar f32;
    }
}

#[cube(launch_unchecked)]
fn ema_kernel<N: Size>(
    e: &Array<Vector<f32, N>>,
    p: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    decay: f32,
    one_minus_decay: f32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        y[i] = e[i] * Vector::new(decay) + p[i] * Vector::new(one_minus_decay);
    }
}

kernel_args! {
    ema_args: ema_kernel<N> {
        e: input V,
        p: input V,
        y: output V,
        decay: scalar f32,
        one_minus_decay: scalar f32;
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// One AdamW step (shapes checked by the caller); replaces the three tensors' storage.
pub(crate) fn adamw<R: Runtime>(
    be: &CubeBackend<R>,
    param: &mut T<R>,
    grad: &T<R>,
    m: &mut T<R>,
    v: &mut T<R>,
    hp: &AdamWStep,
) -> Result<()> {
    let n = grad.numel();
    let p_out = be.alloc(n)?;
    let m_out = be.alloc(n)?;
    let v_out = be.alloc(n)?;
    if n > 0 {
        let (bc1, bc2) = hp.bias_corrections();
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: all seven buffers hold n floats; units check the output length. Each
        // scalar is rounded to f32 once, as on the CPU.
        unsafe {
            adamw_args::Args {
                p: tarr(param),
                g: tarr(grad),
                m: tarr(m),
                v: tarr(v),
                p_out: sarr(&p_out),
                m_out: sarr(&m_out),
                v_out: sarr(&v_out),
                grad_scale: hp.grad_scale,
                decay: 1.0 - hp.lr * hp.weight_decay,
                one_minus_b1: 1.0 - hp.beta1,
                beta2: hp.beta2,
                one_minus_b2: 1.0 - hp.beta2,
                step_size: hp.lr / bc1,
                bc2_sqrt: bc2.sqrt(),
                eps: hp.eps,
            }
            .launch(be, count, dim, w)
        }
    }
    *param = be.tensor(p_out, param.shape().clone())?;
    *m = be.tensor(m_out, m.shape().clone())?;
    *v = be.tensor(v_out, v.shape().clone())?;
    Ok(())
}

/// `ema ← decay·ema + (1 − decay)·param` into a new buffer.
pub(crate) fn ema<R: Runtime>(
    be: &CubeBackend<R>,
    ema: &mut T<R>,
    param: &T<R>,
    decay: f32,
) -> Result<()> {
    let n = ema.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: the three buffers hold n floats; units check the output length.
        unsafe {
            ema_args::Args {
                e: tarr(ema),
                p: tarr(param),
                y: sarr(&out),
                decay,
                one_minus_decay: 1.0 - decay,
            }
            .launch(be, count, dim, w)
        }
    }
    *ema = be.tensor(out, ema.shape().clone())?;
    Ok(())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for w in WIDTHS {
        v.push(adamw_args::variant(
            &format!("w={w}"),
            CubeDim::new_1d(CUBE_1D),
            w,
        ));
        v.push(ema_args::variant(
            &format!("w={w}"),
            CubeDim::new_1d(CUBE_1D),
            w,
        ));
    }
}
