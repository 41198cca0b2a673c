//! The dimension-dependent schedule shift (§4.3) and the shifted sampling grids of the ODE
//! (§4.4) and SDE (§4.5) samplers.

use alloc::format;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// The base dimension `n_base = 4096` of the shift factor (§4.3).
pub const SHIFT_BASE_DIM: usize = 4096;

/// The end point of the reference ODE grid before the shift: `1 − 0.999` (§4.4).
pub const REFERENCE_GRID_END: f64 = 0.001;

/// The reference SDE `last_step_size` (§4.5): its grid stops at `r = 0.04` before the
/// shift and a final mean step finishes the trajectory.
pub const SDE_REFERENCE_LAST_STEP: f64 = 0.04;

/// The shift factor `s = sqrt(dim / base)` (§4.3), `dim = C·H·W` of the latent (not
/// `H·W`, §10.2). `s(768·16·16, 4096) = sqrt(48) = 6.928203230275509`.
pub fn shift_factor(dim: usize, base: usize) -> Result<f64> {
    if dim == 0 || base == 0 {
        return Err(Error::invalid(
            "shift_factor",
            format!("dimensions must be positive, got dim = {dim}, base = {base}"),
        ));
    }
    Ok(libm::sqrt(dim as f64 / base as f64))
}

/// The shifted time `t' = s·t / (1 + (s − 1)·t)` (§4.3): `0 ↦ 0`, `1 ↦ 1`, monotone for
/// `s > 0`; `s > 1` moves interior times toward the noise end.
pub fn shift(t: f64, s: f64) -> f64 {
    s * t / (1.0 + (s - 1.0) * t)
}

/// The inverse of [`shift`]: `t = t' / (s − (s − 1)·t')`.
pub fn unshift(t_shifted: f64, s: f64) -> f64 {
    t_shifted / (s - (s - 1.0) * t_shifted)
}

fn check_s(s: f64) -> Result<()> {
    if !(s > 0.0 && s.is_finite()) {
        return Err(Error::invalid(
            "schedule shift",
            format!("the shift factor must be positive and finite, got {s}"),
        ));
    }
    Ok(())
}

/// `n` times `t_k = shift(r_k)`, `r_k = start − (start − end)·k/(n − 1)`, descending from
/// `shift(start)` to `shift(end)`; computed in f64 and rounded once to f32.
///
/// `n` points give `n − 1` steps. Needs `n ≥ 2` and `0 ≤ end < start ≤ 1`.
pub fn shifted_grid_range(n: usize, s: f64, start: f64, end: f64) -> Result<Vec<f32>> {
    check_s(s)?;
    if n < 2 {
        return Err(Error::invalid(
            "sampling grid",
            format!("needs at least 2 points (1 step), got {n}"),
        ));
    }
    if !(0.0 <= end && end < start && start <= 1.0) {
        return Err(Error::invalid(
            "sampling grid",
            format!("needs 0 <= end < start <= 1, got start = {start}, end = {end}"),
        ));
    }
    let last = (n - 1) as f64;
    Ok((0..n)
        .map(|k| {
            // The end point is exact; interior points interpolate linearly in r.
            let r = if k + 1 == n {
                end
            } else {
                start - (start - end) * (k as f64 / last)
            };
            shift(r, s) as f32
        })
        .collect())
}

/// The ODE grid of §4.4: `r_k = 1 − linspace(0, 1 − end, n)`, then shifted, so `t_0 = 1` and
/// `t_{n−1} = shift(end)`. The reference uses `end =` [`REFERENCE_GRID_END`] `= 0.001` and
/// `n = 50` (49 Euler steps); with `end = 0` the grid reaches the data exactly.
pub fn shifted_grid(n: usize, s: f64, end: f64) -> Result<Vec<f32>> {
    shifted_grid_range(n, s, 1.0, end)
}

/// A grid for the SDE samplers (§4.5): like [`shifted_grid`] but starting at `r = start < 1`
/// because the positive diffusion `D(t) = t/(1 − t)` is infinite at `t = 1`. A natural
/// choice is `start =` [`crate::flow::REFERENCE_T1`] `= 0.999`, the largest training time
/// before the shift, and `end =` [`SDE_REFERENCE_LAST_STEP`]; the final mean step of
/// [`crate::flow::sample_sde`] then goes from `shift(end)` to 0.
pub fn sde_grid(n: usize, s: f64, start: f64, end: f64) -> Result<Vec<f32>> {
    if start.is_nan() || start >= 1.0 {
        return Err(Error::invalid(
            "SDE grid",
            format!("must start below t = 1 (the diffusion is infinite there), got {start}"),
        ));
    }
    if end.is_nan() || end <= 0.0 {
        return Err(Error::invalid(
            "SDE grid",
            format!("must end above t = 0 (the final mean step reaches 0), got {end}"),
        ));
    }
    shifted_grid_range(n, s, start, end)
}
