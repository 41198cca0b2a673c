//! ODE (§4.4) and SDE (§4.5) samplers over any [`Backend`], driven by a [`VelocityField`].
//!
//! Time runs from noise (`t ≈ 1`) toward data (`t = 0`) along a caller-given grid (see
//! [`crate::flow::shifted_grid`] and [`crate::flow::sde_grid`]). The samplers only use
//! backend ops (`axpy`, `scale`, `fill_normal`), so the state never leaves the device.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::check;
use crate::error::{Error, Result};
use crate::rng::PhiloxKey;
use crate::tensor::Tensor;

/// A velocity field `v(x, t)` (§4.1): a model, a guided pair of models
/// ([`crate::flow::ClassifierFreeGuidance`], [`crate::flow::AutoGuidance`]) or a closure.
/// The output has the shape of `x`.
pub trait VelocityField<B: Backend> {
    /// The velocity at state `x` `[B, ...]` and flow time `t` (1 = noise).
    fn velocity(&mut self, x: &Tensor<B>, t: f32) -> Result<Tensor<B>>;
}

impl<B, F> VelocityField<B> for F
where
    B: Backend,
    F: FnMut(&Tensor<B>, f32) -> Result<Tensor<B>>,
{
    fn velocity(&mut self, x: &Tensor<B>, t: f32) -> Result<Tensor<B>> {
        self(x, t)
    }
}

/// Which states a sampler returns besides the final one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Only the final state.
    #[default]
    Last,
    /// Every state: the start, one per grid point after it and, for the SDE with a last
    /// step, the final state (like the reference, which returns all grid states).
    All,
}

/// What a sampler returns.
#[derive(Debug, Clone)]
pub struct Trajectory<B: Backend> {
    /// The final state (the sample to decode).
    pub x: Tensor<B>,
    /// All states when [`Keep::All`] was asked for, else empty.
    pub states: Vec<Tensor<B>>,
    /// Number of velocity evaluations.
    pub evaluations: usize,
}

/// Fixed-step ODE integrators (§4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OdeMethod {
    /// `x_{k+1} = x_k + Δ·v(x_k, t_k)`, `Δ = t_{k+1} − t_k` (one evaluation per step; used
    /// for every reported result).
    #[default]
    Euler,
    /// Explicit trapezoid (torchdiffeq `heun2`): `k1 = v(x_k, t_k)`,
    /// `k2 = v(x_k + Δ·k1, t_{k+1})`, `x_{k+1} = x_k + Δ/2·(k1 + k2)` (two evaluations).
    Heun,
}

fn check_grid(what: &'static str, grid: &[f32], decreasing_only: bool) -> Result<()> {
    if grid.len() < 2 {
        return Err(Error::invalid(
            what,
            format!("the time grid needs at least 2 points, got {}", grid.len()),
        ));
    }
    if let Some(bad) = grid.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        return Err(Error::invalid(
            what,
            format!("grid time {bad} is outside [0, 1]"),
        ));
    }
    let dec = grid.windows(2).all(|w| w[1] < w[0]);
    let inc = !decreasing_only && grid.windows(2).all(|w| w[1] > w[0]);
    if !(dec || inc) {
        let need = if decreasing_only {
            "strictly decreasing"
        } else {
            "strictly monotone"
        };
        return Err(Error::invalid(
            what,
            format!("the time grid must be {need} (t = 1 is noise, t = 0 data)"),
        ));
    }
    Ok(())
}

fn eval<B: Backend, F: VelocityField<B> + ?Sized>(
    field: &mut F,
    x: &Tensor<B>,
    t: f32,
    evaluations: &mut usize,
) -> Result<Tensor<B>> {
    let v = field.velocity(x, t)?;
    check::same_shape("velocity field output", x.shape(), v.shape())?;
    *evaluations += 1;
    Ok(v)
}

/// Integrates `dx/dt = v(x, t)` from `x` at `grid[0]` along `grid` (§4.4).
///
/// `grid` must be strictly monotone in `[0, 1]` (decreasing for sampling; increasing
/// integrates data toward noise). `n` points give `n − 1` steps; there is no extra step
/// past the last grid point (§10.3). Euler costs `n − 1` evaluations, Heun `2(n − 1)`.
pub fn sample_ode<B: Backend, F: VelocityField<B> + ?Sized>(
    b: &B,
    field: &mut F,
    x: Tensor<B>,
    grid: &[f32],
    method: OdeMethod,
    keep: Keep,
) -> Result<Trajectory<B>> {
    check_grid("sample_ode", grid, false)?;
    let mut evaluations = 0;
    let mut states = Vec::new();
    let mut x = x;
    if keep == Keep::All {
        states.push(x.clone());
    }
    for w in grid.windows(2) {
        let (t, t_next) = (w[0], w[1]);
        let dt = t_next - t;
        let k1 = eval(field, &x, t, &mut evaluations)?;
        x = match method {
            OdeMethod::Euler => b.axpy(dt, &k1, &x)?,
            OdeMethod::Heun => {
                let x_pred = b.axpy(dt, &k1, &x)?;
                let k2 = eval(field, &x_pred, t_next, &mut evaluations)?;
                let x_half = b.axpy(0.5 * dt, &k1, &x)?;
                b.axpy(0.5 * dt, &k2, &x_half)?
            }
        };
        if keep == Keep::All {
            states.push(x.clone());
        }
    }
    Ok(Trajectory {
        x,
        states,
        evaluations,
    })
}

/// The diffusion coefficient `D(t) ≥ 0` of the reverse-time SDE (§4.5).
///
/// For any `D ≥ 0`, `dx = (v − D·∇log p_t) dt + sqrt(2D) dW̄` run from `t = 1` to 0 has the
/// same marginals as the probability-flow ODE `dx = v dt`. With `x_t = (1 − t)x + tε`, the
/// score is `∇log p_t(x) = (−(1 − t)·v − x)/t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Diffusion {
    /// `D = 0`: the SDE samplers reduce to the ODE ones.
    Zero,
    /// `D(t) = norm·t/(1 − t)`: the diffusion of the forward noising process of the linear
    /// path (`g² = dσ²/dt − 2σ²·α'/α = 2t/(1 − t)` for `α = 1 − t`, `σ = t`), i.e. the
    /// reference's "SBDM" form written for **our** time convention. The reference evaluates
    /// it as `−t/(1 − t)` (negative, so `sqrt(2D)` is NaN) because its formula assumes the
    /// opposite time direction; ours is positive. It is infinite at `t = 1`, so grids must
    /// start below 1 ([`crate::flow::sde_grid`]).
    Sbdm {
        /// Multiplier (the reference's `diffusion_norm`, 1 by default).
        norm: f64,
    },
    /// `D(t) = norm·σ_t = norm·t`.
    Sigma {
        /// Multiplier.
        norm: f64,
    },
    /// `D(t) = c`.
    Constant(f64),
}

impl Diffusion {
    /// `D(t)`.
    pub fn at(&self, t: f64) -> f64 {
        match *self {
            Diffusion::Zero => 0.0,
            Diffusion::Sbdm { norm } => norm * t / (1.0 - t),
            Diffusion::Sigma { norm } => norm * t,
            Diffusion::Constant(c) => c,
        }
    }
}

/// Stochastic integrators of the reverse SDE (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SdeMethod {
    /// Euler–Maruyama: `x̄ = x − h·f(x, t_k)`, `x_{k+1} = x̄ + sqrt(2·D(t_k)·h)·ξ`.
    #[default]
    EulerMaruyama,
    /// Noise first, then a Heun step of the drift: `x̂ = x + sqrt(2·D(t_k)·h)·ξ`,
    /// `K1 = f(x̂, t_k)`, `K2 = f(x̂ − h·K1, t_{k+1})`, `x_{k+1} = x̂ − h/2·(K1 + K2)`.
    Heun,
}

/// What follows the last grid point of the SDE (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastStep {
    /// The reference's "Mean": one noiseless Euler–Maruyama step of the SDE drift from the
    /// last grid time `t_L` to 0, `x ← x − t_L·f(x, t_L)`. Unlike the reference (which uses
    /// the unshifted 0.04 while its shifted grid ends at `shift(0.04) ≈ 0.224`), the step
    /// starts where the grid ends and lands exactly on `t = 0`.
    #[default]
    Mean,
    /// One probability-flow Euler step to 0, `x ← x − t_L·v(x, t_L)`: for the linear path
    /// this is the posterior mean `E[x_0 | x_{t_L}]` (Tweedie).
    Euler,
    /// Stop at the last grid point.
    None,
}

/// Settings of [`sample_sde`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdeOptions {
    /// The integrator.
    pub method: SdeMethod,
    /// `D(t)`.
    pub diffusion: Diffusion,
    /// The final step to `t = 0`.
    pub last_step: LastStep,
    /// Philox key of the noise.
    pub key: PhiloxKey,
    /// First Philox position: the noise of interval `k` (0-based) is
    /// `fill_normal(x.dims, key, offset + k·numel)`, so a run is reproducible on every
    /// backend and a resumed run can continue the stream.
    pub offset: u64,
}

impl SdeOptions {
    /// Euler–Maruyama with `D(t) = t/(1 − t)` and the final mean step, noise from `key`
    /// starting at position 0.
    pub fn new(key: PhiloxKey) -> Self {
        SdeOptions {
            method: SdeMethod::EulerMaruyama,
            diffusion: Diffusion::Sbdm { norm: 1.0 },
            last_step: LastStep::Mean,
            key,
            offset: 0,
        }
    }
}

/// The reverse-SDE drift `f = v − D·score = (1 + D(1 − t)/t)·v + (D/t)·x` at `t > 0`.
fn sde_drift<B: Backend, F: VelocityField<B> + ?Sized>(
    b: &B,
    field: &mut F,
    x: &Tensor<B>,
    t: f32,
    diffusion: &Diffusion,
    evaluations: &mut usize,
) -> Result<Tensor<B>> {
    let v = eval(field, x, t, evaluations)?;
    let d = diffusion.at(t as f64);
    if d == 0.0 {
        return Ok(v);
    }
    let t = t as f64;
    let cv = 1.0 + d * (1.0 - t) / t;
    let cx = d / t;
    let scaled = b.scale(&v, cv as f32)?;
    b.axpy(cx as f32, x, &scaled)
}

/// Samples the reverse-time SDE of §4.5 along a strictly decreasing `grid` inside `(0, 1)`,
/// from the state `x` at `grid[0]`, then applies `opts.last_step`.
///
/// On each interval `h = t_k − t_{k+1} > 0`; the drift is `f = v − D·score` with
/// `score = (−(1 − t)·v − x)/t` and `D = opts.diffusion` (see [`Diffusion`]: positive in
/// our convention, so the grid must start below 1 when `D(1) = ∞`). `D ≡ 0` with
/// [`LastStep::None`] reproduces [`sample_ode`] (Euler–Maruyama ↔ Euler, Heun ↔ Heun).
/// Costs one (EM) or two (Heun) evaluations per interval plus one for the last step.
pub fn sample_sde<B: Backend, F: VelocityField<B> + ?Sized>(
    b: &B,
    field: &mut F,
    x: Tensor<B>,
    grid: &[f32],
    opts: &SdeOptions,
    keep: Keep,
) -> Result<Trajectory<B>> {
    check_grid("sample_sde", grid, true)?;
    for &t in grid {
        let d = opts.diffusion.at(t as f64);
        if !(d.is_finite() && d >= 0.0) {
            return Err(Error::invalid(
                "sample_sde",
                format!(
                    "the diffusion D(t) = {d} at grid time t = {t} must be finite and >= 0 \
                     (start the grid below t = 1, see sde_grid)"
                ),
            ));
        }
        if d > 0.0 && t <= 0.0 {
            return Err(Error::invalid(
                "sample_sde",
                "the score is undefined at t = 0: end the grid above 0 and let the last step reach it",
            ));
        }
    }
    let dims: Vec<usize> = x.dims().to_vec();
    let numel = x.numel() as u64;
    let diffusion = &opts.diffusion;
    let mut evaluations = 0;
    let mut states = Vec::new();
    let mut x = x;
    if keep == Keep::All {
        states.push(x.clone());
    }
    for (k, w) in grid.windows(2).enumerate() {
        let (t, t_next) = (w[0], w[1]);
        let h = t - t_next;
        let d = diffusion.at(t as f64);
        let noise_scale = libm::sqrt(2.0 * d * h as f64) as f32;
        let noisy = |b: &B, base: &Tensor<B>| -> Result<Tensor<B>> {
            if d == 0.0 {
                return Ok(base.clone());
            }
            let offset = opts.offset.wrapping_add((k as u64).wrapping_mul(numel));
            let xi = b.fill_normal(&dims, opts.key, offset)?;
            b.axpy(noise_scale, &xi, base)
        };
        x = match opts.method {
            SdeMethod::EulerMaruyama => {
                let f = sde_drift(b, field, &x, t, diffusion, &mut evaluations)?;
                let mean = b.axpy(-h, &f, &x)?;
                noisy(b, &mean)?
            }
            SdeMethod::Heun => {
                let x_hat = noisy(b, &x)?;
                let k1 = sde_drift(b, field, &x_hat, t, diffusion, &mut evaluations)?;
                let x_pred = b.axpy(-h, &k1, &x_hat)?;
                let k2 = sde_drift(b, field, &x_pred, t_next, diffusion, &mut evaluations)?;
                let x_half = b.axpy(-0.5 * h, &k1, &x_hat)?;
                b.axpy(-0.5 * h, &k2, &x_half)?
            }
        };
        if keep == Keep::All {
            states.push(x.clone());
        }
    }
    let t_last = grid[grid.len() - 1];
    let finish = match opts.last_step {
        LastStep::Mean => Some(sde_drift(
            b,
            field,
            &x,
            t_last,
            diffusion,
            &mut evaluations,
        )?),
        LastStep::Euler => Some(eval(field, &x, t_last, &mut evaluations)?),
        LastStep::None => None,
    };
    if let Some(f) = finish {
        x = b.axpy(-t_last, &f, &x)?;
        if keep == Keep::All {
            states.push(x.clone());
        }
    }
    Ok(Trajectory {
        x,
        states,
        evaluations,
    })
}
