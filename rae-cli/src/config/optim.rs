//! The optimiser of a training stage decided from the flags, the YAML plan and the preset
//! defaults: the learning-rate schedule, AdamW, clipping and the EMA decay, and how the
//! checkpoint metadata records them.

use rae_core::json::JsonValue;
use rae_core::optim::{Decay, LrSchedule, Warmup};
use rae_core::train::OptimizerConfig;

use super::train_run::{TINY_LR, TINY_STAGE1_LR};
use crate::cli::TrainArgs;
use crate::errors::CliResult;

/// The learning-rate schedule: `training.scheduler` of a YAML (the flags overriding it),
/// else the reference recipe in epochs for a full-size model without `--lr`/`--warmup-steps`,
/// else warm-up and decay from the flags and the preset's defaults.
fn schedule(
    a: &TrainArgs,
    steps: u64,
    tiny: bool,
    stage: u8,
    steps_per_epoch: u64,
) -> CliResult<LrSchedule> {
    // [config hook] training.scheduler of a reference YAML, --lr/--final-lr/--warmup-steps
    // overriding it.
    if let Some(s) = a
        .plan
        .as_ref()
        .and_then(|p| p.lr_schedule(steps_per_epoch, a.lr, a.final_lr, a.warmup_steps))
    {
        return s;
    }
    if !tiny && a.lr.is_none() && a.warmup_steps.is_none() {
        // The reference recipes, stated in epochs (§5.1, §2.7.7).
        let s = if stage == 2 {
            LrSchedule::stage2_reference(steps_per_epoch)
        } else {
            LrSchedule::stage1_reference(steps_per_epoch)
        };
        return Ok(s?);
    }
    let base = a.lr.unwrap_or(match (tiny, stage) {
        (true, 1) => TINY_STAGE1_LR,
        (true, _) => TINY_LR,
        _ => 2e-4,
    });
    let fin = a.final_lr.unwrap_or(base * 0.1);
    let warm = a.warmup_steps.unwrap_or(if tiny { steps / 20 } else { 0 });
    let s = LrSchedule {
        base_lr: base,
        final_lr: fin,
        warmup_steps: warm.min(steps),
        decay_end_step: steps.max(warm),
        warmup: if stage == 1 {
            Warmup::FromZero
        } else {
            Warmup::Constant
        },
        decay: if stage == 1 {
            Decay::Cosine
        } else {
            Decay::Linear
        },
    };
    s.validate()?;
    Ok(s)
}

/// The optimiser of stage `stage` (1 or 2) for a run of `steps` steps of `steps_per_epoch`
/// each; `tiny` selects the tiny preset's defaults.
pub(super) fn opt_config(
    a: &TrainArgs,
    steps: u64,
    tiny: bool,
    stage: u8,
    steps_per_epoch: u64,
) -> CliResult<OptimizerConfig> {
    let default_ema = if tiny {
        0.995
    } else if stage == 2 {
        0.9995
    } else {
        0.9978
    };
    let default_clip = if stage == 2 { Some(1.0) } else { None };
    Ok(OptimizerConfig {
        // [config hook] training.optimizer of a reference YAML.
        adamw: a.plan.as_ref().and_then(|p| p.adamw()).unwrap_or_default(),
        schedule: schedule(a, steps, tiny, stage, steps_per_epoch)?,
        clip: match a.clip {
            Some(c) if c > 0.0 => Some(c),
            Some(_) => None,
            None => default_clip,
        },
        ema_decay: a.ema_decay.unwrap_or(default_ema),
    })
}

/// The optimiser as the checkpoint's `config` metadata records it.
pub(super) fn schedule_json(o: &OptimizerConfig) -> JsonValue {
    JsonValue::object([
        ("lr", JsonValue::from(o.schedule.base_lr)),
        ("final_lr", o.schedule.final_lr.into()),
        ("warmup_steps", o.schedule.warmup_steps.into()),
        ("decay_end_step", o.schedule.decay_end_step.into()),
        (
            "warmup_from_zero",
            (o.schedule.warmup == Warmup::FromZero).into(),
        ),
        (
            "decay",
            format!("{:?}", o.schedule.decay).to_lowercase().into(),
        ),
        (
            "betas",
            JsonValue::array([o.adamw.beta1 as f64, o.adamw.beta2 as f64]),
        ),
        ("eps", (o.adamw.eps as f64).into()),
        ("weight_decay", (o.adamw.weight_decay as f64).into()),
        ("clip", o.clip.map(|c| c as f64).into()),
        ("ema_decay", (o.ema_decay as f64).into()),
    ])
}

/// The optimiser's settings for a run's summary and its `run.` metadata.
pub(super) fn optimizer_settings(o: &OptimizerConfig) -> Vec<(&'static str, String)> {
    let s = &o.schedule;
    vec![
        ("lr", format!("{:e}", s.base_lr)),
        ("final_lr", format!("{:e}", s.final_lr)),
        ("warmup_steps", s.warmup_steps.to_string()),
        ("decay_end_step", s.decay_end_step.to_string()),
        (
            "schedule",
            format!(
                "{} warm-up, {} decay",
                if s.warmup == Warmup::FromZero {
                    "from-zero"
                } else {
                    "constant"
                },
                format!("{:?}", s.decay).to_lowercase()
            ),
        ),
        (
            "adamw",
            format!(
                "betas ({}, {}), eps {:e}, weight decay {}",
                o.adamw.beta1, o.adamw.beta2, o.adamw.eps, o.adamw.weight_decay
            ),
        ),
        ("clip", o.clip.map_or("off".to_string(), |c| c.to_string())),
        ("ema_decay", o.ema_decay.to_string()),
    ]
}
