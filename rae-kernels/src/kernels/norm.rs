//! LayerNorm and RMSNorm over the last axis (spec §0, §3.3), forward and backward.
//!
//! One cube per row: the units stride over the row, the sums meet in shared memory
//! ([`cube_reduce`]). LayerNorm takes the mean first and then the biased variance of the
//! centred values (two passes, like the CPU backend). The backward computes `dx` per row
//! the same way and the parameter gradients `Σ_rows dy·x̂` and `Σ_rows dy` with the column
//! reduction of [`crate::kernels::reduce`].

use cubecl::prelude::*;
use rae_core::backend::{NormGrads, NormStats};
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::kernels::reduce::{cube_reduce, launch_cols, mode, ColInputs, ROW_CUBE};
use crate::launch::{kernel_args, sarr, spread, tarr, u32_arg, Variant};

#[cube(launch_unchecked)]
fn norm_forward_kernel(
    x: &Array<f32>,
    gamma: &Array<f32>,
    beta: &Array<f32>,
    y: &mut Array<f32>,
    mean_out: &mut Array<f32>,
    rstd_out: &mut Array<f32>,
    rows: u32,
    c: u32,
    eps: f32,
    #[comptime] layer: bool,
    #[comptime] has_gamma: bool,
    #[comptime] has_beta: bool,
) {
    let mut smem = SharedMemory::<f32>::new(ROW_CUBE as usize);
    let row = CUBE_POS;
    let valid = row < rows as usize;
    let c = c as usize;
    let base = row * c;
    let cf = f32::cast_from(c as u32);
    let mut mean = f32::new(0.0);
    if layer {
        let mut s = f32::new(0.0);
        let mut j = UNIT_POS as usize;
        while j < c {
            if valid {
                s += x[base + j];
            }
            j += CUBE_DIM as usize;
        }
        mean = cube_reduce(s, &mut smem, mode::SUM) / cf;
    }
    let mut q = f32::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < c {
        if valid {
            let d = x[base + j] - mean;
            q += d * d;
        }
        j += CUBE_DIM as usize;
    }
    let var = cube_reduce(q, &mut smem, mode::SUM) / cf;
    let rstd = f32::new(1.0) / f32::sqrt(var + eps);
    if valid {
        if UNIT_POS == 0 {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
        let mut j = UNIT_POS as usize;
        while j < c {
            let mut v = (x[base + j] - mean) * rstd;
            if has_gamma {
                v *= gamma[j];
            }
            if has_beta {
                v += beta[j];
            }
            y[base + j] = v;
            j += CUBE_DIM as usize;
        }
    }
}

kernel_args! {
    norm_forward_args: norm_forward_kernel {
        x: input f32,
        gamma: input f32,
        beta: input f32,
        y: output f32,
        mean_out: output f32,
        rstd_out: output f32,
        rows: scalar u32,
        c: scalar u32,
        eps: scalar f32;
        layer: bool,
        has_gamma: bool,
        has_beta: bool,
    }
}

#[cube(launch_unchecked)]
fn norm_backward_kernel(
    x: &Array<f32>,
    mean: &Array<f32>,
    rstd: &Array<f32>,
    gamma: &Array<f32>,
    dy: &Array<f32>,
    dx: &mut Array<f32>,
    rows: u32,
    c: u32,
    inv_c: f32,
    #[comptime] layer: bool,
    #[comptime] has_gamma: bool,
) {
    let mut smem = SharedMemory::<f32>::new(ROW_CUBE as usize);
    let row = CUBE_POS;
    let valid = row < rows as usize;
    let c = c as usize;
    let base = row * c;
    let mut mu = f32::new(0.0);
    let mut rs = f32::new(0.0);
    if valid {
        rs = rstd[row];
        if layer {
            mu = mean[row];
        }
    }
    let mut sum_g = f32::new(0.0);
    let mut sum_gx = f32::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < c {
        if valid {
            let xhat = (x[base + j] - mu) * rs;
            let mut g = dy[base + j];
            if has_gamma {
                g *= gamma[j];
            }
            sum_g += g;
            sum_gx += g * xhat;
        }
        j += CUBE_DIM as usize;
    }
    let mut mean_g = f32::new(0.0);
    if layer {
        mean_g = cube_reduce(sum_g, &mut smem, mode::SUM) * inv_c;
    }
    let mean_gx = cube_reduce(sum_gx, &mut smem, mode::SUM) * inv_c;
    if valid {
        let mut j = UNIT_POS as usize;
        while j < c {
            let xhat = (x[base + j] - mu) * rs;
            let mut g = dy[base + j];
            if has_gamma {
                g *= gamma[j];
            }
            dx[base + j] = rs * (g - mean_g - xhat * mean_gx);
            j += CUBE_DIM as usize;
        }
    }
}

kernel_args! {
    norm_backward_args: norm_backward_kernel {
        x: input f32,
        mean: input f32,
        rstd: input f32,
        gamma: input f32,
        dy: input f32,
        dx: output f32,
        rows: scalar u32,
        c: scalar u32,
        inv_c: scalar f32;
        layer: bool,
        has_gamma: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// LayerNorm (`layer`) or RMSNorm forward on `x` `[rows, c]` (checked by the caller).
pub(crate) fn forward<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    gamma: Option<&T<R>>,
    beta: Option<&T<R>>,
    eps: f32,
    layer: bool,
    (rows, c): (usize, usize),
) -> Result<(T<R>, NormStats<CubeBackend<R>>)> {
    let y = be.alloc(rows * c)?;
    let mean = be.alloc(rows)?;
    let rstd = be.alloc(rows)?;
    if rows > 0 {
        let g = be.or_placeholder(gamma.map(|t| t.storage()));
        let b = be.or_placeholder(beta.map(|t| t.storage()));
        // SAFETY: one cube per row reads and writes row·c + j < rows·c and the stats at row
        // < rows; gamma/beta are read at j < c only when present (checked to be [c]).
        unsafe {
            norm_forward_args::Args {
                x: tarr(x),
                gamma: sarr(g),
                beta: sarr(b),
                y: sarr(&y),
                mean_out: sarr(&mean),
                rstd_out: sarr(&rstd),
                rows: u32_arg("norm rows", rows)?,
                c: u32_arg("norm width", c)?,
                eps,
                layer,
                has_gamma: gamma.is_some(),
                has_beta: beta.is_some(),
            }
            .launch(be, spread(rows), CubeDim::new_1d(ROW_CUBE))
        }
    }
    // RMSNorm has no mean: the CPU backend reports zeros; the kernel wrote 0 for each row.
    Ok((
        be.tensor(y, x.shape().clone())?,
        NormStats {
            mean: be.tensor_dims(mean, &[rows])?,
            rstd: be.tensor_dims(rstd, &[rows])?,
        },
    ))
}

/// Backward of [`forward`]; shapes checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    stats: &NormStats<CubeBackend<R>>,
    gamma: Option<&T<R>>,
    has_beta: bool,
    dy: &T<R>,
    layer: bool,
    (rows, c): (usize, usize),
) -> Result<NormGrads<CubeBackend<R>>> {
    let dx = be.alloc(rows * c)?;
    if rows > 0 {
        let g = be.or_placeholder(gamma.map(|t| t.storage()));
        // SAFETY: as in the forward: reads and writes at row·c + j < rows·c, stats at row.
        unsafe {
            norm_backward_args::Args {
                x: tarr(x),
                mean: tarr(&stats.mean),
                rstd: tarr(&stats.rstd),
                gamma: sarr(g),
                dy: tarr(dy),
                dx: sarr(&dx),
                rows: u32_arg("norm rows", rows)?,
                c: u32_arg("norm width", c)?,
                inv_c: 1.0 / c as f32,
                layer,
                has_gamma: gamma.is_some(),
            }
            .launch(be, spread(rows), CubeDim::new_1d(ROW_CUBE))
        }
    }
    let dweight = match gamma {
        Some(_) => {
            // RMSNorm ignores the saved mean (as the CPU backend does).
            let (mean, op) = if layer {
                (Some(stats.mean.storage()), mode::NORM_DW)
            } else {
                (None, mode::RMS_DW)
            };
            let inp = ColInputs {
                x: dy.storage(),
                z: Some(x.storage()),
                mean,
                rstd: Some(stats.rstd.storage()),
            };
            let dw = launch_cols(be, &inp, [1, rows, c], op, None)?;
            Some(be.tensor_dims(dw, &[c])?)
        }
        None => None,
    };
    let dbias = if has_beta {
        let inp = ColInputs {
            x: dy.storage(),
            z: None,
            mean: None,
            rstd: None,
        };
        let db = launch_cols(be, &inp, [1, rows, c], mode::SUM, None)?;
        Some(be.tensor_dims(db, &[c])?)
    } else {
        None
    };
    Ok(NormGrads {
        dx: be.tensor(dx, x.shape().clone())?,
        dweight,
        dbias,
    })
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(ROW_CUBE);
    for layer in [false, true] {
        for has_gamma in [false, true] {
            for has_beta in [false, true] {
                if has_beta && !layer {
                    continue;
                }
                v.push(norm_forward_args::variant(
                    &format!("layer={layer} gamma={has_gamma} beta={has_beta}"),
                    dim,
                    layer,
                    has_gamma,
                    has_beta,
                ));
            }
            v.push(norm_backward_args::variant(
                &format!("layer={layer} gamma={has_gamma}"),
                dim,
                layer,
                has_gamma,
            ));
        }
    }
}
