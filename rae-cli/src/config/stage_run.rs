//! The settled training stages: [`Stage1Run`] (a decoder) and [`Stage2Run`] (a DiT-DH),
//! each decided once from the flags, the YAML plan and the preset defaults when the model
//! and the data are known, shown at the start of the stage and recorded in its checkpoint.
//!
//! Precedence, everywhere: a flag given on the command line, then the YAML (already written
//! into the flags or carried by the plan, see `apply.rs`), then the preset (`tiny`), then
//! the reference's default.

use std::fmt;
use std::path::{Path, PathBuf};

use rae_core::flow::TimeDist;
use rae_core::json::JsonValue;
use rae_core::models::{DecoderConfig, DitConfig, NoiseRule};
use rae_core::train::{OptimizerConfig, Shard, Stage1Config, Stage2Config};

use super::optim::{opt_config, optimizer_settings, schedule_json};
use super::train_run::{
    run_metadata, summary, TrainMode, TrainRun, DEFAULT_STAGE_STEPS, TINY_SAMPLE_CFG,
    TINY_SHIFT_BASE, TINY_STAGE1_STEPS, TINY_STAGE2_BATCH, TINY_STAGE2_STEPS,
};
use crate::cli::TrainArgs;
use crate::commands::generate::{shift_for, SampleSettings};
use crate::errors::{CliError, CliResult};
use crate::presets;

/// Where a stage writes and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFiles {
    /// The run folder (log, sample grids).
    pub out: PathBuf,
    /// The training checkpoint.
    pub ckpt: PathBuf,
    /// Whether the checkpoint is resumed.
    pub resume: bool,
    /// Where this invocation stops (`--stop-at`, at most the stage's steps).
    pub stop: u64,
    /// A log line every N steps.
    pub log_every: u64,
    /// A checkpoint every N steps (and at the end).
    pub ckpt_every: u64,
}

impl StageFiles {
    fn new(a: &TrainArgs, ckpt_name: &str, pipeline: bool, steps: u64) -> CliResult<Self> {
        let ckpt = a.out.join(ckpt_name);
        Ok(StageFiles {
            resume: resume_decision(a, &ckpt, pipeline)?,
            out: a.out.clone(),
            ckpt,
            stop: a.stop_at.unwrap_or(steps).min(steps),
            log_every: a.log_every.max(1),
            ckpt_every: a.ckpt_every.max(1),
        })
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![("ckpt", self.ckpt.display().to_string())];
        if self.resume {
            s.push(("resume", "true".into()));
        }
        s.push(("stop", self.stop.to_string()));
        s.push(("log_every", self.log_every.to_string()));
        s.push(("ckpt_every", self.ckpt_every.to_string()));
        s
    }
}

/// Checks whether a checkpoint exists and what to do: `Ok(true)` to resume.
fn resume_decision(a: &TrainArgs, ckpt: &Path, pipeline: bool) -> CliResult<bool> {
    let exists = ckpt.exists();
    if a.resume && !exists {
        return Err(CliError::new(format!(
            "--resume: there is no checkpoint at {}",
            ckpt.display()
        )));
    }
    if exists && !a.resume && !pipeline && !a.fresh {
        return Err(CliError::new(format!(
            "{} already exists: pass --resume to continue that run, --fresh to start over, or another --out",
            ckpt.display()
        )));
    }
    Ok(exists && !a.fresh)
}

fn noise_rule(s: &str) -> CliResult<NoiseRule> {
    match s {
        "uniform" => Ok(NoiseRule::Uniform),
        "half-normal" | "halfnormal" => Ok(NoiseRule::HalfNormal),
        o => Err(CliError::new(format!(
            "--noise-rule {o:?}: use uniform or half-normal"
        ))),
    }
}

/// `training.epochs` of a reference YAML in steps (unless `--max-steps`), else `steps`.
fn total_steps(a: &TrainArgs, steps: u64, spe: u64) -> u64 {
    a.plan
        .as_ref()
        .and_then(|p| p.total_steps(a.max_steps, spe))
        .unwrap_or(steps)
}

/// A stage's settings followed by those of the whole run it does not repeat.
fn with_train(
    mut stage: Vec<(&'static str, String)>,
    train: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    for (k, v) in train {
        if !stage.iter().any(|(s, _)| s == k) {
            stage.push((k, v.clone()));
        }
    }
    stage
}

/// Stage 1, settled: a decoder trained on a frozen encoder's latents.
#[derive(Debug, Clone)]
pub struct Stage1Run {
    /// The decoder's configuration.
    pub decoder: DecoderConfig,
    /// Whether the tiny preset's defaults apply.
    pub tiny: bool,
    /// Images per step.
    pub batch_size: usize,
    /// Optimiser steps of the stage.
    pub steps: u64,
    /// Optimiser, schedule, clipping, EMA.
    pub optimizer: OptimizerConfig,
    /// Noise augmentation of the latents (§2.5).
    pub noise: Stage1Config,
    /// Seed of the decoder's initialisation, the data order and the noise.
    pub seed: u64,
    /// Checkpoint, log and stopping point.
    pub files: StageFiles,
    /// Where the decoder's EMA weights go at the end.
    pub final_path: PathBuf,
    /// LPIPS and the discriminator (`None`: the L1 loss alone).
    pub gan: Option<super::gan::GanRun>,
    noise_rule_name: String,
    /// The settings of the whole `train` run (recorded with the stage's).
    train: Vec<(&'static str, String)>,
}

/// This process's share of a global batch of `batch_size` in the data-parallel group
/// (the whole batch in one process).
fn shard_for(batch_size: usize) -> CliResult<Shard> {
    let g = crate::dist::group();
    let shard = Shard {
        rank: g.rank,
        world: g.world,
    };
    if !batch_size.is_multiple_of(g.world) || batch_size == 0 {
        return Err(CliError::new(format!(
            "--batch-size {batch_size} is the global batch and must split evenly over the {} \
             processes of this run",
            g.world
        )));
    }
    Ok(shard)
}

/// The `processes` setting of a data-parallel run (none for one process, so one-process
/// summaries and checkpoints read as before).
fn processes(shard: Shard) -> Option<(&'static str, String)> {
    (shard.world > 1).then(|| ("processes", shard.world.to_string()))
}

impl TrainRun {
    /// Settles stage 1 for a decoder of `decoder` on `items` training images.
    pub fn stage1(&self, decoder: DecoderConfig, items: usize) -> CliResult<Stage1Run> {
        let a = &self.args;
        let pipeline = self.mode == TrainMode::Pipeline;
        let tiny = decoder == presets::tiny_decoder();
        let batch_size = a.batch_size.unwrap_or(if tiny { 32 } else { 8 });
        let spe = (items / batch_size).max(1) as u64;
        let base_steps = if pipeline {
            a.stage1_steps.unwrap_or(TINY_STAGE1_STEPS)
        } else {
            a.max_steps.unwrap_or(DEFAULT_STAGE_STEPS)
        };
        let steps = total_steps(a, base_steps, spe);
        let optimizer = opt_config(a, steps, tiny, 1, spe)?;
        let files = StageFiles::new(a, "decoder-train.safetensors", pipeline, steps)?;
        let noise = Stage1Config {
            noise_tau: a.noise_tau,
            noise_rule: noise_rule(&a.noise_rule)?,
            shard: shard_for(batch_size)?,
        };
        let final_path = if pipeline {
            self.pipeline_rae_dir().join("decoder.safetensors")
        } else {
            self.out.join("decoder.safetensors")
        };
        Ok(Stage1Run {
            decoder,
            tiny,
            batch_size,
            steps,
            optimizer,
            noise,
            seed: a.seed,
            files,
            final_path,
            gan: super::gan::GanRun::settle(&a.gan, spe)?,
            noise_rule_name: a.noise_rule.clone(),
            train: self.settings(),
        })
    }
}

impl Stage1Run {
    /// The settings as `(key, value)`, for the summary and the `run.` metadata.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("stage", "1".to_string()),
            ("preset", if self.tiny { "tiny" } else { "custom" }.into()),
            ("batch_size", self.batch_size.to_string()),
            ("steps", self.steps.to_string()),
        ];
        s.extend(processes(self.noise.shard));
        s.extend(optimizer_settings(&self.optimizer));
        s.push(("noise_tau", self.noise.noise_tau.to_string()));
        s.push(("noise_rule", self.noise_rule_name.clone()));
        s.push(("seed", self.seed.to_string()));
        match &self.gan {
            Some(g) => s.extend(g.settings()),
            None => s.push(("objective", "L1".into())),
        }
        s.extend(self.files.settings());
        s.push(("decoder_out", self.final_path.display().to_string()));
        s
    }

    /// The checkpoint metadata: `format`, `kind` and `config` (what resuming and loading
    /// read), then every setting of the stage and of the whole run under `run.`.
    pub fn to_metadata(&self) -> CliResult<Vec<(String, String)>> {
        let cfg = JsonValue::object([
            ("stage", JsonValue::from(1u64)),
            ("decoder", self.decoder.to_json()),
            ("optimizer", schedule_json(&self.optimizer)),
            ("batch_size", self.batch_size.into()),
            ("noise_tau", (self.noise.noise_tau as f64).into()),
            ("noise_rule", self.noise_rule_name.as_str().into()),
            ("seed", self.seed.into()),
        ])
        .to_json_string()?;
        let mut m = vec![
            ("format".to_string(), "rae-train".to_string()),
            ("kind".into(), "decoder".into()),
            ("config".into(), cfg),
        ];
        m.extend(run_metadata(&with_train(self.settings(), &self.train)));
        Ok(m)
    }
}

impl fmt::Display for Stage1Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&summary("stage 1 settings", &self.settings()))
    }
}

/// What stage 2 trains on, as far as its settings depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Data {
    /// Latent shape `[C, h, w]` of the RAE.
    pub latent: [usize; 3],
    /// Training items (images or cached latents).
    pub items: usize,
    /// Number of classes.
    pub classes: usize,
    /// Whether latents are encoded from images on the fly (else read from a cache).
    pub images: bool,
}

/// Stage 2, settled: a DiT-DH trained on a RAE's normalised latents.
#[derive(Debug, Clone)]
pub struct Stage2Run {
    /// The DiT-DH's configuration (the YAML's `stage_2.params`, else the preset).
    pub model: DitConfig,
    /// Whether the tiny preset's defaults apply.
    pub tiny: bool,
    /// The data the settings were decided for.
    pub data: Stage2Data,
    /// Whether the data is the built-in dataset (the class check of the samples applies).
    pub builtin: bool,
    /// Items per step.
    pub batch_size: usize,
    /// Optimiser steps of the stage.
    pub steps: u64,
    /// Optimiser, schedule, clipping, EMA.
    pub optimizer: OptimizerConfig,
    /// Time distribution, shift and label dropout.
    pub flow: Stage2Config,
    /// The shift base dimension (0: no shift).
    pub shift_base: usize,
    /// The preview grids' sampler (its guidance scale is recorded as `sample`'s default).
    pub preview: SampleSettings,
    /// A preview grid every N steps (0: only at the end).
    pub sample_every: u64,
    /// Seed of the model's initialisation, the data order and the noise.
    pub seed: u64,
    /// Checkpoint, log and stopping point.
    pub files: StageFiles,
    time_dist_name: String,
    preset_name: String,
    /// The settings of the whole `train` run (recorded with the stage's).
    train: Vec<(&'static str, String)>,
}

impl TrainRun {
    /// Settles stage 2 on `data`.
    pub fn stage2(&self, data: Stage2Data) -> CliResult<Stage2Run> {
        let a = &self.args;
        // [config hook] stage_2.params of a reference YAML replace the preset.
        let from_config = a
            .plan
            .as_ref()
            .and_then(|p| p.dit_for(data.latent))
            .transpose()?;
        let tiny = from_config.is_none() && a.model.eq_ignore_ascii_case("tiny");
        let builtin = data.images && a.data.data.is_none();
        let model = match from_config {
            Some(c) => c,
            None => presets::dit_preset(&a.model, data.latent, data.classes)?,
        };
        let batch_size = a
            .batch_size
            .unwrap_or(if tiny { TINY_STAGE2_BATCH } else { 8 });
        let spe = (data.items / batch_size).max(1) as u64;
        let base_steps = a.max_steps.unwrap_or(if self.mode == TrainMode::Pipeline {
            TINY_STAGE2_STEPS
        } else {
            DEFAULT_STAGE_STEPS
        });
        let steps = total_steps(a, base_steps, spe);
        let optimizer = opt_config(a, steps, tiny, 2, spe)?;
        let files = StageFiles::new(
            a,
            "dit-train.safetensors",
            a.stage.is_none() && !a.rae.given(),
            steps,
        )?;
        // The tiny latents hold 2048 values, 96 times fewer than ImageNet's: with the
        // reference base 4096 the shift would be 0.71 and training would dwell on low noise,
        // where the class is already visible. Base 43 keeps s ≈ 6.9 as at ImageNet 256²
        // (§4.3).
        let shift_base = a
            .shift_base
            .unwrap_or(if tiny { TINY_SHIFT_BASE } else { 4096 });
        let sample_cfg = a
            .sample_cfg
            .unwrap_or(if tiny { TINY_SAMPLE_CFG } else { 1.0 });
        let shift = shift_for(data.latent.iter().product(), shift_base)?;
        let flow = Stage2Config {
            time_dist: TimeDist::parse(&a.time_dist)?,
            shift,
            label_dropout: model.class_dropout_prob,
            shard: shard_for(batch_size)?,
        };
        let preview = SampleSettings {
            steps: a.sample_steps,
            guidance_scale: sample_cfg,
            shift_base,
            ..SampleSettings::default()
        };
        Ok(Stage2Run {
            model,
            tiny,
            data,
            builtin,
            batch_size,
            steps,
            optimizer,
            flow,
            shift_base,
            preview,
            sample_every: a.sample_every,
            seed: a.seed,
            files,
            time_dist_name: a.time_dist.clone(),
            preset_name: a.model.clone(),
            train: self.settings(),
        })
    }
}

impl Stage2Run {
    /// The settings as `(key, value)`, for the summary and the `run.` metadata.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("stage", "2".to_string()),
            (
                "model",
                if self.tiny {
                    "tiny".to_string()
                } else {
                    self.preset_name.clone()
                },
            ),
            ("latent", format!("{:?}", self.data.latent)),
            ("classes", self.data.classes.to_string()),
            ("batch_size", self.batch_size.to_string()),
            ("steps", self.steps.to_string()),
        ];
        s.extend(processes(self.flow.shard));
        s.extend(optimizer_settings(&self.optimizer));
        s.push(("time_dist", self.time_dist_name.clone()));
        s.push(("shift_base", self.shift_base.to_string()));
        s.push(("shift", format!("{:.4}", self.flow.shift)));
        s.push(("sample_steps", self.preview.steps.to_string()));
        s.push(("sample_cfg", self.preview.guidance_scale.to_string()));
        s.push(("sample_every", self.sample_every.to_string()));
        s.push(("seed", self.seed.to_string()));
        s.extend(self.files.settings());
        s
    }

    /// The checkpoint metadata: `format`, `kind` and `config` (what resuming and `sample`
    /// read), then every setting of the stage and of the whole run under `run.`.
    pub fn to_metadata(&self) -> CliResult<Vec<(String, String)>> {
        let cfg = JsonValue::object([
            ("stage", JsonValue::from(2u64)),
            ("model", self.model.to_json()),
            ("optimizer", schedule_json(&self.optimizer)),
            ("batch_size", self.batch_size.into()),
            ("time_dist", self.time_dist_name.as_str().into()),
            ("shift", self.flow.shift.into()),
            ("shift_base", self.shift_base.into()),
            ("sample_cfg", (self.preview.guidance_scale as f64).into()),
            ("seed", self.seed.into()),
        ])
        .to_json_string()?;
        let mut m = vec![
            ("format".to_string(), "rae-train".to_string()),
            ("kind".into(), "dit".into()),
            ("config".into(), cfg),
        ];
        m.extend(run_metadata(&with_train(self.settings(), &self.train)));
        Ok(m)
    }
}

impl fmt::Display for Stage2Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&summary("stage 2 settings", &self.settings()))
    }
}
