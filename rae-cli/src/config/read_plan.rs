//! Reading a config's plan (§5.1, §2.7.7): the DiT architecture of `stage_2.params`, the
//! optimiser, the epoch-based schedule and the run length, from a parsed [`RefConfig`].

use rae_core::json::JsonValue;
use rae_core::models::DitConfig;
use rae_core::optim::{AdamWConfig, Decay, Warmup};

use super::plan::{SchedulePlan, Span, TrainPlan};
use super::RefConfig;
use crate::errors::CliResult;

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
