//! The settled `train` command: what runs (the built-in pipeline, stage 1 or stage 2),
//! where the RAE, the data and the output are, and the preset defaults every stage reads.
//! [`TrainRun::settle`] decides these once from the parsed flags (with `--config` already
//! applied); [`TrainRun::stage1`] and [`TrainRun::stage2`] settle each stage once its model
//! and data are known (see `stage_run.rs`).

use std::fmt;
use std::path::PathBuf;

use super::rae_paths::resolve_rae;
use crate::cli::TrainArgs;
use crate::errors::{CliError, CliResult};
use crate::store::RaePaths;

/// Seed of the built-in frozen encoder (fixed: the tiny RAE is the same for every run).
pub const TINY_ENCODER_SEED: u64 = 0x00E1_C0DE;
/// Stage-1 steps of the built-in pipeline.
pub const TINY_STAGE1_STEPS: u64 = 800;
/// Stage-2 steps of the built-in pipeline.
pub const TINY_STAGE2_STEPS: u64 = 3000;
/// Stage-2 batch of the tiny preset.
pub const TINY_STAGE2_BATCH: usize = 16;
/// Base learning rate of the tiny preset's stage 2.
pub const TINY_LR: f64 = 2e-3;
/// Base learning rate of the tiny preset's stage 1.
pub const TINY_STAGE1_LR: f64 = 1e-3;
/// Shift base of the tiny preset (s ≈ 6.9 for its 2048-value latents).
pub const TINY_SHIFT_BASE: usize = 43;
/// Guidance scale of the tiny preset's sample grids.
pub const TINY_SAMPLE_CFG: f32 = 3.0;
/// Steps of `--stage 1` or `--stage 2` without `--max-steps` (or `training.epochs`).
pub const DEFAULT_STAGE_STEPS: u64 = 1000;
/// Images per batch when the statistics of the pipeline are computed.
pub const PIPELINE_STATS_BATCH: usize = 64;

/// What `train` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMode {
    /// Only check the images of `--data` (`--check-data`).
    CheckData,
    /// The built-in tiny pipeline: encoder, decoder, statistics, DiT-DH.
    Pipeline,
    /// Stage 1: a decoder for a given encoder.
    Stage1,
    /// Stage 2: a DiT-DH on the latents of a given RAE.
    Stage2,
}

/// The training images.
#[derive(Debug, Clone, PartialEq)]
pub struct DataChoice {
    /// An image folder (one subfolder per class); `None`: the built-in dataset.
    pub folder: Option<PathBuf>,
    /// Image side (`None`: the decoder's output size).
    pub image_size: Option<usize>,
    /// Images of the built-in dataset.
    pub builtin_size: usize,
    /// Whether every image of the folder is checked before the first step.
    pub check: bool,
    /// Threads loading batches ahead of the step (0: on the training thread).
    pub workers: usize,
    /// The class index of the folder (`--class-index`).
    pub class_index: Option<PathBuf>,
}

impl DataChoice {
    /// The image side, `default` (the decoder's output size) unless `--image-size`.
    pub fn size(&self, default: usize) -> usize {
        self.image_size.unwrap_or(default)
    }

    /// How the data is named in logs.
    pub fn describe(&self) -> String {
        self.folder
            .as_ref()
            .map_or("built-in coloured shapes".to_string(), |d| {
                d.display().to_string()
            })
    }
}

/// The settled `train` command.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// What runs.
    pub mode: TrainMode,
    /// The output folder.
    pub out: PathBuf,
    /// The RAE of stage 1 (its encoder) or stage 2 (`None` for the pipeline, which builds
    /// its own under `out/rae`).
    pub rae: Option<RaePaths>,
    /// The training images.
    pub data: DataChoice,
    /// A latent cache for stage 2 instead of encoding images on the fly.
    pub latents: Option<PathBuf>,
    /// Start over: the pipeline deletes what an earlier run left.
    pub fresh: bool,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// The flags, for the stages to settle their own settings from (see `stage_run.rs`).
    pub(super) args: TrainArgs,
}

impl TrainRun {
    /// Settles `train` from its flags (with `--config` already applied).
    pub fn settle(a: TrainArgs) -> CliResult<TrainRun> {
        let mode = if a.check_data {
            TrainMode::CheckData
        } else if a.stage.is_none() && !a.rae.given() && a.latents.is_none() {
            TrainMode::Pipeline
        } else {
            match a.stage.unwrap_or(2) {
                1 => TrainMode::Stage1,
                2 => TrainMode::Stage2,
                s => return Err(CliError::new(format!("--stage {s}: must be 1 or 2"))),
            }
        };
        let rae = match mode {
            TrainMode::Stage1 | TrainMode::Stage2 => Some(resolve_rae(&a.rae, None)?),
            TrainMode::CheckData | TrainMode::Pipeline => None,
        };
        Ok(TrainRun {
            mode,
            out: a.out.clone(),
            rae,
            data: DataChoice {
                folder: a.data.data.clone(),
                image_size: a.data.image_size,
                builtin_size: a.data.builtin_size,
                check: !a.skip_check,
                workers: a
                    .data
                    .workers
                    .unwrap_or_else(crate::data::loader::default_workers),
                class_index: a.data.class_index.clone(),
            },
            latents: a.latents.clone(),
            fresh: a.fresh,
            seed: a.seed,
            args: a,
        })
    }

    /// Where the pipeline keeps its RAE.
    pub fn pipeline_rae_dir(&self) -> PathBuf {
        self.out.join("rae")
    }

    /// The settings of the run as `(key, value)`: the summary shows them and each stage's
    /// checkpoint records them (with the stage's own) under `run.`.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("mode", format!("{:?}", self.mode).to_lowercase()),
            ("out", self.out.display().to_string()),
            ("data", self.data.describe()),
        ];
        if let Some(n) = self.data.image_size {
            s.push(("image_size", n.to_string()));
        }
        if self.data.folder.is_none() {
            s.push(("builtin_size", self.data.builtin_size.to_string()));
        }
        if let Some(r) = &self.rae {
            s.push(("encoder", r.encoder.display().to_string()));
            s.push(("decoder", r.decoder.display().to_string()));
            if let Some(c) = &r.decoder_config {
                s.push(("decoder_config", c.clone()));
            }
            if let Some(p) = &r.stats {
                s.push(("stats", p.display().to_string()));
            }
        }
        if let Some(p) = &self.latents {
            s.push(("latents", p.display().to_string()));
        }
        if let Some(p) = &self.args.config {
            s.push(("config", p.display().to_string()));
        }
        s.push(("seed", self.seed.to_string()));
        s
    }
}

impl fmt::Display for TrainRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&summary("train", &self.settings()))
    }
}

/// A summary block: a title line, then one indented `key: value` line per setting.
pub fn summary(title: &str, settings: &[(&'static str, String)]) -> String {
    let width = settings.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("{title}:");
    for (k, v) in settings {
        out.push_str(&format!("\n  {k:<width$}  {v}"));
    }
    out
}

/// Settings as checkpoint metadata, each key under `run.`.
pub fn run_metadata(settings: &[(&'static str, String)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (format!("run.{k}"), v.clone()))
        .collect()
}
