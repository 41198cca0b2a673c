//! What a config sets beyond the flags: the DiT architecture, AdamW constants, the
//! epoch-based learning-rate schedule (§5.1, §2.7.7) and the run length.

use std::path::Path;

use rae_core::json::JsonValue;
use rae_core::models::{DitConfig, DitDh};
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::Backend;

use super::RefConfig;
use crate::cli::TrainArgs;
use crate::errors::{CliError, CliResult, Context};
use crate::files::load_tensor_file;

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
    pub fn lr_schedule(&self, spe: u64, a: &TrainArgs) -> Option<CliResult<LrSchedule>> {
        self.schedule
            .map(|s| s.build(spe, a.lr, a.final_lr, a.warmup_steps))
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

/// Loads DiT weights (`.safetensors` or `.pt`; the `ema` half of a training checkpoint when
/// present, §3.8) into a model of the explicit configuration `cfg`.
pub fn load_dit_with<B: Backend>(b: &B, path: &Path, cfg: DitConfig) -> CliResult<DitDh<B>> {
    crate::store::dit_from_file(b, &load_tensor_file(path)?, path, cfg)
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

impl RefConfig {
    /// A DiT configuration from a `params` mapping (`stage_2.params`).
    pub fn dit_config(&self, key: &str) -> CliResult<Option<DitConfig>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let target_key = key.trim_end_matches(".params").to_string() + ".target";
        if let Some(t) = self.string(&target_key)? {
            let cls = t.rsplit('.').next().unwrap_or("");
            if !matches!(cls, "DiTwDDTHead" | "LightningDiT") {
                return Err(self.err(
                    &target_key,
                    format!("{t:?} is not a model rae-cli has (DiTwDDTHead, LightningDiT)"),
                ));
            }
        }
        let cfg = DitConfig::from_json(v, &format!("{}: {key}", self.source()))?;
        Ok(Some(cfg))
    }

    /// The training settings of `training.optimizer` and `training.scheduler`.
    pub fn train_plan(&self) -> CliResult<TrainPlan> {
        let mut plan = TrainPlan {
            source: self.source(),
            dit: self.dit_config("stage_2.params")?,
            adamw: None,
            schedule: None,
            epochs: None,
        };
        if !self.has("training") {
            return Ok(plan);
        }
        if let Some(t) = self.string("training.optimizer.type")? {
            if !t.eq_ignore_ascii_case("adamw") {
                return Err(self.err(
                    "training.optimizer.type",
                    format!("{t:?}: only AdamW is available"),
                ));
            }
        }
        let base = self
            .num("training.optimizer.lr")?
            .or(self.num("training.base_lr")?)
            .unwrap_or(2e-4);
        let mut adamw = AdamWConfig {
            lr: base as f32,
            ..AdamWConfig::default()
        };
        for key in ["training.optimizer.betas", "training.optimizer.beta"] {
            match self.get(key) {
                None => continue,
                Some(v) => {
                    // A list of two numbers; a scalar is refused rather than guessed at
                    // (the reference passes the value to torch.optim.AdamW as `betas`).
                    let pair: Option<Vec<f64>> = match v {
                        JsonValue::Array(a) => a.iter().map(JsonValue::as_f64).collect(),
                        _ => None,
                    };
                    match pair.as_deref() {
                        Some([b1, b2]) => {
                            adamw.beta1 = *b1 as f32;
                            adamw.beta2 = *b2 as f32;
                        }
                        _ => {
                            return Err(self.err(key, format!("expected [beta1, beta2], found {v}")))
                        }
                    }
                    break;
                }
            }
        }
        if let Some(wd) = self
            .num("training.optimizer.weight_decay")?
            .or(self.num("training.optimizer.wd")?)
        {
            adamw.weight_decay = wd as f32;
        }
        if let Some(eps) = self.num("training.optimizer.eps")? {
            adamw.eps = eps as f32;
        }
        adamw
            .validate()
            .map_err(|e| self.err("training.optimizer", e))?;
        plan.adamw = Some(adamw);
        plan.epochs = self.num("training.epochs")?;
        if plan.epochs.is_some_and(|e| e <= 0.0) {
            return Err(self.err("training.epochs", "must be positive"));
        }
        plan.schedule = Some(if self.has("training.scheduler") {
            let decay = match self
                .string("training.scheduler.type")?
                .unwrap_or_else(|| "linear".into())
                .to_ascii_lowercase()
                .as_str()
            {
                "linear" => Decay::Linear,
                "cosine" => Decay::Cosine,
                other => {
                    return Err(self.err(
                        "training.scheduler.type",
                        format!("{other:?}: use linear or cosine"),
                    ))
                }
            };
            let base_lr = self
                .num("training.scheduler.base_lr")?
                .or(self.num("training.base_lr")?)
                .unwrap_or(base);
            let final_lr = self
                .num("training.scheduler.final_lr")?
                .or(self.num("training.final_lr")?)
                .unwrap_or(base_lr);
            let warmup_len = match self.uint("training.scheduler.warmup_steps")? {
                Some(s) => Span::Steps(s),
                None => Span::Epochs(
                    self.num("training.scheduler.warmup_epochs")?
                        .or(self.num("training.decay_start_epoch")?)
                        .unwrap_or(0.0),
                ),
            };
            let decay_end = match self.uint("training.scheduler.decay_end_steps")? {
                Some(s) => Span::Steps(s),
                None => match self
                    .num("training.scheduler.decay_end_epoch")?
                    .or(self.num("training.decay_end_epoch")?)
                {
                    Some(e) => Span::Epochs(e),
                    None => warmup_len,
                },
            };
            SchedulePlan {
                base_lr,
                final_lr,
                warmup: if self.boolean("training.scheduler.warmup_from_zero")? == Some(true) {
                    Warmup::FromZero
                } else {
                    Warmup::Constant
                },
                decay,
                warmup_len,
                decay_end,
            }
        } else {
            // No scheduler: the reference keeps the optimiser's rate throughout.
            SchedulePlan {
                base_lr: base,
                final_lr: base,
                warmup: Warmup::Constant,
                decay: Decay::Constant,
                warmup_len: Span::Steps(0),
                decay_end: Span::Steps(0),
            }
        });
        Ok(plan)
    }
}
