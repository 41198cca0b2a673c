//! Drawing latents from a DiT-DH: initial noise, the ODE or SDE sampler of §4.4–§4.5 on
//! the shifted grid, classifier-free guidance or AutoGuidance (§4.6–§4.7), and decoding the
//! latents to images.

use rae_core::flow::{
    sample_ode, sample_sde, sde_grid, shift_factor, shifted_grid, AutoGuidance,
    ClassifierFreeGuidance, GuidanceInterval, Keep, OdeMethod, SdeMethod, SdeOptions,
    VelocityField,
};
use rae_core::models::{DitDh, Mode, Rae};
use rae_core::{Backend, PhiloxKey, Result, Tensor};

use crate::errors::{CliError, CliResult};
use crate::image_io::from_chw;

/// Philox stream of the initial sampling noise (stream numbers are fixed so `--seed` gives
/// the same noise on every backend).
pub const SAMPLE_NOISE_STREAM: u64 = 0x5A30;
/// Philox stream of the SDE noise.
pub const SDE_NOISE_STREAM: u64 = 0x5A31;

/// Which integrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Euler ODE (the reference).
    Euler,
    /// Heun ODE.
    Heun,
    /// Euler–Maruyama SDE with the positive diffusion `D(t) = t/(1 − t)`.
    Sde,
    /// Heun SDE.
    SdeHeun,
}

impl std::str::FromStr for SamplerKind {
    type Err = CliError;
    fn from_str(s: &str) -> Result<Self, CliError> {
        match s.to_ascii_lowercase().as_str() {
            "euler" | "ode" => Ok(SamplerKind::Euler),
            "heun" | "heun2" => Ok(SamplerKind::Heun),
            "sde" | "euler-maruyama" | "em" => Ok(SamplerKind::Sde),
            "sde-heun" | "sdeheun" => Ok(SamplerKind::SdeHeun),
            other => Err(CliError::new(format!(
                "--sampler {other:?}: unknown sampler (euler, heun, sde, sde-heun)"
            ))),
        }
    }
}

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSettings {
    /// Integrator.
    pub sampler: SamplerKind,
    /// Grid points (N points give N − 1 steps; the reference uses 50).
    pub steps: usize,
    /// Guidance weight (1 = none).
    pub guidance_scale: f32,
    /// Guidance interval in flow time.
    pub interval: (f32, f32),
    /// Shift base dimension (4096, §4.3); 0 disables the shift.
    pub shift_base: usize,
    /// Seed of the initial noise.
    pub seed: u64,
}

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings {
            sampler: SamplerKind::Euler,
            steps: 50,
            guidance_scale: 1.0,
            interval: (0.0, 1.0),
            shift_base: 4096,
            seed: 0,
        }
    }
}

/// The shift factor for a latent of `dim` values (1 when disabled).
pub fn shift_for(dim: usize, base: usize) -> CliResult<f64> {
    if base == 0 {
        return Ok(1.0);
    }
    Ok(shift_factor(dim, base)?)
}

struct Model<'a, B: Backend> {
    b: &'a B,
    m: &'a DitDh<B>,
}

impl<B: Backend> rae_core::flow::ConditionalModel<B> for Model<'_, B> {
    fn predict(&mut self, x: &Tensor<B>, t: f32, labels: &[u32]) -> Result<Tensor<B>> {
        let n = x.dims()[0];
        self.m
            .forward(self.b, x, &vec![t; n], labels, Mode::Infer)
            .map(|r| r.0)
    }
}

/// Initial noise `[n, C, H, W]` for `seed` (Philox, identical on every backend).
pub fn initial_noise<B: Backend>(
    b: &B,
    model: &DitDh<B>,
    n: usize,
    seed: u64,
) -> Result<Tensor<B>> {
    let c = &model.config;
    b.fill_normal(
        &[n, c.in_channels, c.input_size, c.input_size],
        PhiloxKey::new(seed, SAMPLE_NOISE_STREAM),
        0,
    )
}

/// Samples latents for `labels` from `noise` (`[n, C, H, W]`). With `guide` the guidance is
/// AutoGuidance, otherwise classifier-free guidance when the scale is not 1.
pub fn generate<B: Backend>(
    b: &B,
    model: &DitDh<B>,
    guide: Option<&DitDh<B>>,
    labels: &[u32],
    noise: Tensor<B>,
    s: &SampleSettings,
) -> CliResult<Tensor<B>> {
    let dim = noise.numel() / labels.len().max(1);
    let shift = shift_for(dim, s.shift_base)?;
    let interval = GuidanceInterval {
        scale: s.guidance_scale,
        t_min: s.interval.0,
        t_max: s.interval.1,
    };
    let main = Model { b, m: model };
    let null = model.config.num_classes as u32;
    let mut field: Box<dyn VelocityField<B> + '_> = match guide {
        Some(g) => Box::new(AutoGuidance::new(
            b,
            main,
            Model { b, m: g },
            labels,
            interval,
        )?),
        None if s.guidance_scale != 1.0 => Box::new(ClassifierFreeGuidance::new(
            b, main, labels, null, interval,
        )?),
        None => {
            let labels = labels.to_vec();
            let mut m = main;
            Box::new(move |x: &Tensor<B>, t: f32| {
                rae_core::flow::ConditionalModel::predict(&mut m, x, t, &labels)
            })
        }
    };
    let out = match s.sampler {
        SamplerKind::Euler | SamplerKind::Heun => {
            let grid = shifted_grid(s.steps, shift, rae_core::flow::REFERENCE_GRID_END)?;
            let method = if s.sampler == SamplerKind::Euler {
                OdeMethod::Euler
            } else {
                OdeMethod::Heun
            };
            sample_ode(b, field.as_mut(), noise, &grid, method, Keep::Last)?
        }
        SamplerKind::Sde | SamplerKind::SdeHeun => {
            let grid = sde_grid(
                s.steps,
                shift,
                rae_core::flow::REFERENCE_T1,
                rae_core::flow::SDE_REFERENCE_LAST_STEP,
            )?;
            let mut opts = SdeOptions::new(PhiloxKey::new(s.seed, SDE_NOISE_STREAM));
            if s.sampler == SamplerKind::SdeHeun {
                opts.method = SdeMethod::Heun;
            }
            sample_sde(b, field.as_mut(), noise, &grid, &opts, Keep::Last)?
        }
    };
    Ok(out.x)
}

/// Decodes latents to RGB images.
pub fn decode_images<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    z: &Tensor<B>,
) -> CliResult<Vec<image::RgbImage>> {
    let img = rae.decode(b, z)?;
    let d = img.dims().to_vec();
    let host = b.download(&img)?;
    let per = 3 * d[2] * d[3];
    Ok((0..d[0])
        .map(|i| from_chw(&host[i * per..(i + 1) * per], d[2], d[3]))
        .collect())
}
