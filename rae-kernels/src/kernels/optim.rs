//! Optimiser updates: AdamW (PyTorch semantics, the CPU backend's operation order) and the
//! EMA of the weights. Both write new buffers, so a tensor cloned before the update (an
//! EMA copy, a saved activation) keeps its values.

use cubecl::prelude::*;
use rae_core::backend::AdamWStep;
use rae_core::{Result, Tensor};

use crate::backend::CubeBackend;
use crate::launch::{grid_1d, sarr, tarr, vector_width, CUBE_1D};
use crate::lowering::{input, output, scalar, Variant, WIDTHS};

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
        // SAFETY: all seven buffers hold n floats; units check the output length.
        unsafe {
            adamw_kernel::launch_unchecked::<R>(
                be.client(),
                count,
                dim,
                w,
                tarr(param),
                tarr(grad),
                tarr(m),
                tarr(v),
                sarr(&p_out),
                sarr(&m_out),
                sarr(&v_out),
                // Each scalar rounded to f32 once, as on the CPU.
                hp.grad_scale,
                1.0 - hp.lr * hp.weight_decay,
                1.0 - hp.beta1,
                hp.beta2,
                1.0 - hp.beta2,
                hp.lr / bc1,
                bc2.sqrt(),
                hp.eps,
            )
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
            ema_kernel::launch_unchecked::<R>(
                be.client(),
                count,
                dim,
                w,
                tarr(ema),
                tarr(param),
                sarr(&out),
                decay,
                1.0 - decay,
            )
        }
    }
    *ema = be.tensor(out, ema.shape().clone())?;
    Ok(())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for w in WIDTHS {
        v.push(Variant::new(
            format!("adamw_kernel w={w}"),
            CubeDim::new_1d(CUBE_1D),
            move |b| {
                type V = Vector<f32, adamw_kernel::N>;
                b.scope.register_size::<adamw_kernel::N>(w);
                let (p, g, m, vv) = (input::<V>(b), input::<V>(b), input::<V>(b), input::<V>(b));
                let (po, mo, vo) = (output::<V>(b), output::<V>(b), output::<V>(b));
                let s: Vec<_> = (0..8).map(|_| scalar::<f32>(b)).collect();
                adamw_kernel::expand::<adamw_kernel::N>(
                    &mut b.scope,
                    w,
                    p,
                    g,
                    m,
                    vv,
                    po,
                    mo,
                    vo,
                    s[0].clone(),
                    s[1].clone(),
                    s[2].clone(),
                    s[3].clone(),
                    s[4].clone(),
                    s[5].clone(),
                    s[6].clone(),
                    s[7].clone(),
                );
            },
        ));
        v.push(Variant::new(
            format!("ema_kernel w={w}"),
            CubeDim::new_1d(CUBE_1D),
            move |b| {
                type V = Vector<f32, ema_kernel::N>;
                b.scope.register_size::<ema_kernel::N>(w);
                let (e, p, y) = (input::<V>(b), input::<V>(b), output::<V>(b));
                let (d, od) = (scalar::<f32>(b), scalar::<f32>(b));
                ema_kernel::expand::<ema_kernel::N>(&mut b.scope, w, e, p, y, d, od);
            },
        ));
    }
}
