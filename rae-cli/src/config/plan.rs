//! What a config sets beyond the flags: the DiT architecture, AdamW constants, the
//! epoch-based learning-rate schedule (§5.1, §2.7.7) and the run length.

use rae_core::models::DitConfig;
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};

use crate::errors::{CliError, CliResult, Context};

/// An epoch count or a step count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Span {
    /// Epochs (`floor(epochs · steps_per_epoch)` steps, as the reference rounds).
    Epochs(f64),
    /// Steps.
    Steps(u64),
}

impl Span {
    fn steps(self, spe: u64) -> u64 {
        match self {
            Span::Epochs(e) => (e * spe as f64).floor().max(0.0) as u64,
            Span::Steps(s) => s,
        }
    }
}

/// The learning-rate schedule of `training.scheduler` (§5.1, §2.7.7), resolved to steps once
/// the steps per epoch are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulePlan {
    /// Rate after the warm-up (`scheduler.base_lr`).
    pub base_lr: f64,
    /// Rate at the end of the decay (`scheduler.final_lr`).
    pub final_lr: f64,
    /// Warm-up shape (`warmup_from_zero`).
    pub warmup: Warmup,
    /// Decay shape (`type`: linear or cosine; constant without a scheduler).
    pub decay: Decay,
    /// Warm-up length (`warmup_epochs` or `warmup_steps`).
    pub warmup_len: Span,
    /// End of the decay (`decay_end_epoch` or `decay_end_steps`).
    pub decay_end: Span,
}

impl SchedulePlan {
    /// The schedule for `spe` optimiser steps per epoch; `lr`, `final_lr` and
    /// `warmup_steps` (command-line flags) replace the file's values.
    pub fn build(
        &self,
        spe: u64,
        lr: Option<f64>,
        final_lr: Option<f64>,
        warmup_steps: Option<u64>,
    ) -> CliResult<LrSchedule> {
        let warmup_steps = warmup_steps.unwrap_or_else(|| self.warmup_len.steps(spe));
        let s = LrSchedule {
            base_lr: lr.unwrap_or(self.base_lr),
            final_lr: final_lr.unwrap_or(self.final_lr),
            warmup_steps,
            decay_end_step: self.decay_end.steps(spe).max(warmup_steps),
            warmup: self.warmup,
            decay: self.decay,
        };
        s.validate()?;
        Ok(s)
    }
}

/// What a config sets for `train` beyond the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPlan {
    /// The config file (for messages).
    pub source: String,
    /// `stage_2.params` (dropped when `--model` is given).
    pub dit: Option<DitConfig>,
    /// `training.optimizer` (betas, weight decay, eps; the rate comes from the schedule).
    pub adamw: Option<AdamWConfig>,
    /// `training.scheduler`, or a constant rate when the file has `training` without it.
    pub schedule: Option<SchedulePlan>,
    /// `training.epochs` (the run's length unless `--max-steps` is given).
    pub epochs: Option<f64>,
}

impl TrainPlan {
    /// The learning-rate schedule for `spe` steps per epoch, with `--lr`, `--final-lr` and
    /// `--warmup-steps` overriding the file; `None` when the file has no `training` section.
    pub fn lr_schedule(
        &self,
        spe: u64,
        lr: Option<f64>,
        final_lr: Option<f64>,
        warmup_steps: Option<u64>,
    ) -> Option<CliResult<LrSchedule>> {
        self.schedule
            .map(|s| s.build(spe, lr, final_lr, warmup_steps))
            .map(|r| r.context(format!("config {}: training.scheduler", self.source)))
    }

    /// `training.epochs` in steps, unless `--max-steps` was given.
    pub fn total_steps(&self, max_steps_flag: Option<u64>, spe: u64) -> Option<u64> {
        match (max_steps_flag, self.epochs) {
            (None, Some(e)) => Some(Span::Epochs(e).steps(spe).max(1)),
            _ => None,
        }
    }

    /// The AdamW constants, when the file sets them.
    pub fn adamw(&self) -> Option<AdamWConfig> {
        self.adamw
    }

    /// `stage_2.params` checked against the latent shape `[C, g, g]` of the RAE.
    pub fn dit_for(&self, latent: [usize; 3]) -> Option<CliResult<DitConfig>> {
        let cfg = self.dit.clone()?;
        Some(check_latent(cfg, latent, &self.source, "stage_2.params"))
    }
}

fn check_latent(
    cfg: DitConfig,
    latent: [usize; 3],
    source: &str,
    key: &str,
) -> CliResult<DitConfig> {
    if [cfg.in_channels, cfg.input_size, cfg.input_size] != latent {
        return Err(CliError::new(format!(
            "config {source}: {key} describes latents [{}, {}, {}] but the RAE makes {latent:?}",
            cfg.in_channels, cfg.input_size, cfg.input_size
        )));
    }
    Ok(cfg)
}

/// What a config sets for `sample` beyond the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplePlan {
    /// The config file (for messages).
    pub source: String,
    /// `stage_2.params` (dropped when `--model` is given).
    pub dit: Option<DitConfig>,
    /// `guidance.guidance_model.params` for AutoGuidance (dropped when `--model` is given).
    pub guide: Option<DitConfig>,
}

/// Sample-side checks of an explicit DiT configuration against the RAE's latent shape.
pub fn dit_for_sample(
    plan: Option<&SamplePlan>,
    guide: bool,
    latent: [usize; 3],
) -> Option<CliResult<DitConfig>> {
    let p = plan?;
    let (cfg, key) = if guide {
        (p.guide.clone()?, "guidance.guidance_model.params")
    } else {
        (p.dit.clone()?, "stage_2.params")
    };
    Some(check_latent(cfg, latent, &p.source, key))
}
