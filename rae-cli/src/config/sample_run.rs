//! The settled `sample` command: [`SampleRun::settle`] decides once, from the flags (with
//! `--config` applied) and the settings the training run recorded in the checkpoint, which
//! checkpoint and RAE are used, which classes are drawn and how.

use std::fmt;
use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;

use super::plan::SamplePlan;
use super::rae_paths::resolve_rae;
use super::train_run::{run_metadata, summary};
use crate::cli::SampleArgs;
use crate::commands::eval::inception::{missing_inception, parse_metrics, Metric, PAPER_METRICS};
use crate::commands::generate::SampleSettings;
use crate::errors::{CliError, CliResult};
use crate::store::{check_dit_checkpoint, checkpoint_metadata, RaePaths, TensorFile};

/// The checkpoint `sample` reads without `--ckpt`.
pub const DEFAULT_SAMPLE_CKPT: &str = "runs/default/dit-train.safetensors";
/// The shift base without a flag, a YAML or a recorded one (the reference's, §4.3).
pub const REFERENCE_SHIFT_BASE: usize = 4096;

/// Which classes are drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassChoice {
    /// Every class of the model (at most the first 1000).
    All,
    /// These classes, in order.
    List(Vec<u32>),
}

impl ClassChoice {
    /// The classes, checked against the model's `num_classes`.
    pub fn resolve(&self, num_classes: usize) -> CliResult<Vec<u32>> {
        let list = match self {
            ClassChoice::All => (0..num_classes.min(1000) as u32).collect(),
            ClassChoice::List(l) => l.clone(),
        };
        if let Some(bad) = list.iter().find(|c| **c as usize >= num_classes) {
            return Err(CliError::new(format!(
                "class {bad} is outside the model's {num_classes} classes (0..{})",
                num_classes - 1
            )));
        }
        Ok(list)
    }
}

/// `sample --eval-ref`: the samples scored on Inception features as they are made.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleEval {
    /// The reference (ADM `.npz`, `--save-stats` file, or image folder).
    pub reference: PathBuf,
    /// Inception-v3 weights.
    pub inception: PathBuf,
    /// The metrics (Inception ones only).
    pub metrics: Vec<Metric>,
    /// Where the results are also written.
    pub json: Option<PathBuf>,
    /// Images per Inception batch.
    pub batch_size: usize,
}

impl SampleEval {
    /// Settles the `--eval-ref` flags; `None` without `--eval-ref`.
    fn settle(a: &SampleArgs) -> CliResult<Option<SampleEval>> {
        let Some(reference) = a.eval_ref.clone() else {
            return Ok(None);
        };
        let metrics = parse_metrics(a.metrics.as_deref().unwrap_or(PAPER_METRICS))?;
        if let Some(m) = metrics.iter().find(|m| !m.needs_inception()) {
            return Err(CliError::new(format!(
                "--metrics: sample --eval-ref computes Inception metrics (fid, is, sfid, kid, \
                 prec, recall), not {}",
                format!("{m:?}").to_lowercase()
            )));
        }
        let inception = a
            .inception
            .clone()
            .ok_or_else(|| missing_inception(&metrics))?;
        if !reference.exists() {
            return Err(CliError::new(format!(
                "--eval-ref {}: no such file or folder",
                reference.display()
            )));
        }
        Ok(Some(SampleEval {
            reference,
            inception,
            metrics,
            json: a.eval_json.clone(),
            batch_size: a.eval_batch_size.max(1),
        }))
    }
}

/// The settled `sample` command.
#[derive(Debug, Clone)]
pub struct SampleRun {
    /// The DiT-DH checkpoint.
    pub ckpt: PathBuf,
    /// The RAE (by default the `rae` folder beside the checkpoint).
    pub rae: RaePaths,
    /// `--model`: a DiT configuration or preset when the checkpoint carries none.
    pub model: Option<String>,
    /// What `--config` sets beyond the flags (the DiT architectures).
    pub plan: Option<SamplePlan>,
    /// The guide model of AutoGuidance.
    pub guidance_model: Option<PathBuf>,
    /// The classes drawn.
    pub classes: ClassChoice,
    /// Samples per class.
    pub per_class: usize,
    /// Sampler, steps, guidance, shift, seed.
    pub settings: SampleSettings,
    /// The output folder.
    pub out: PathBuf,
    /// Initial noise from a file instead of the seed.
    pub init_noise: Option<PathBuf>,
    /// Where the final latents are saved.
    pub save_latents: Option<PathBuf>,
    /// `--eval-ref`: score the samples as they are made.
    pub eval: Option<SampleEval>,
    /// `--no-save`: write no PNGs and no grid.
    pub no_save: bool,
}

impl SampleRun {
    /// Settles `sample` from its flags (with `--config` already applied) and the checkpoint's
    /// recorded settings. Also returns the checkpoint when checking it meant reading it whole
    /// (a `.pt` file), so it is not read twice.
    pub fn settle(a: SampleArgs) -> CliResult<(SampleRun, Option<TensorFile>)> {
        let ckpt = match &a.ckpt {
            Some(p) => crate::hub::resolve_path(p, crate::hub::Want::File, "--ckpt")?,
            None => PathBuf::from(DEFAULT_SAMPLE_CKPT),
        };
        if !ckpt.exists() {
            return Err(CliError::new(format!(
                "no DiT-DH checkpoint at {}: train one first (`rae-cli train`) or pass --ckpt",
                ckpt.display()
            )));
        }
        let checked = check_dit_checkpoint(&ckpt)?;
        let default_rae = ckpt
            .parent()
            .map(|p| p.join("rae"))
            .unwrap_or_else(|| PathBuf::from("rae"));
        let rae = resolve_rae(&a.rae, Some(&default_rae))?;
        let classes = match (&a.class, &a.classes) {
            (Some(c), None) => ClassChoice::List(vec![*c]),
            (None, Some(s)) => ClassChoice::List(
                s.split(',')
                    .map(|x| {
                        x.trim().parse::<u32>().map_err(|_| {
                            CliError::new(format!(
                                "--classes {s:?}: expected comma-separated class numbers"
                            ))
                        })
                    })
                    .collect::<CliResult<_>>()?,
            ),
            (None, None) => ClassChoice::All,
            (Some(_), Some(_)) => return Err(CliError::new("give --class or --classes, not both")),
        };
        let eval = SampleEval::settle(&a)?;
        if a.no_save && eval.is_none() && a.save_latents.is_none() {
            return Err(CliError::new(
                "--no-save writes no images: give --eval-ref or --save-latents, else the run \
                 produces nothing",
            ));
        }
        let (ck_shift, ck_cfg) = training_sampling_defaults(&ckpt)?;
        let settings = SampleSettings {
            sampler: a.sampler.parse()?,
            steps: a.steps,
            guidance_scale: a.cfg_scale.or(ck_cfg).unwrap_or(1.0),
            interval: parse_interval(&a.cfg_interval)?,
            shift_base: a.shift_base.or(ck_shift).unwrap_or(REFERENCE_SHIFT_BASE),
            seed: a.seed,
        };
        let run = SampleRun {
            ckpt,
            rae,
            model: a.model,
            plan: a.plan,
            guidance_model: match &a.guidance_model {
                Some(p) => Some(crate::hub::resolve_path(
                    p,
                    crate::hub::Want::File,
                    "--guidance-model",
                )?),
                None => None,
            },
            classes,
            per_class: a.num.max(1),
            settings,
            out: a.out,
            init_noise: a.init_noise,
            save_latents: a.save_latents,
            eval,
            no_save: a.no_save,
        };
        Ok((run, checked))
    }

    /// The settings as `(key, value)`, for the summary and the `run.` metadata of the saved
    /// latents.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        let mut v = vec![
            ("ckpt", self.ckpt.display().to_string()),
            ("encoder", self.rae.encoder.display().to_string()),
            ("decoder", self.rae.decoder.display().to_string()),
        ];
        if let Some(p) = &self.rae.stats {
            v.push(("stats", p.display().to_string()));
        }
        if let Some(m) = &self.model {
            v.push(("model", m.clone()));
        }
        if let Some(p) = &self.plan {
            v.push(("config", p.source.clone()));
        }
        if let Some(g) = &self.guidance_model {
            v.push(("guidance_model", g.display().to_string()));
        }
        v.push((
            "classes",
            match &self.classes {
                ClassChoice::All => "all".to_string(),
                ClassChoice::List(l) => l.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            },
        ));
        v.push(("per_class", self.per_class.to_string()));
        v.push(("sampler", format!("{:?}", s.sampler).to_lowercase()));
        v.push(("steps", s.steps.to_string()));
        v.push(("cfg_scale", s.guidance_scale.to_string()));
        v.push(("cfg_interval", format!("{},{}", s.interval.0, s.interval.1)));
        v.push(("shift_base", s.shift_base.to_string()));
        v.push(("seed", s.seed.to_string()));
        if let Some(p) = &self.init_noise {
            v.push(("init_noise", p.display().to_string()));
        }
        if let Some(e) = &self.eval {
            v.push(("eval_ref", e.reference.display().to_string()));
            let m: Vec<String> = e
                .metrics
                .iter()
                .map(|m| format!("{m:?}").to_lowercase())
                .collect();
            v.push(("eval_metrics", m.join(",")));
        }
        if self.no_save {
            v.push(("no_save", "true".to_string()));
        } else {
            v.push(("out", self.out.display().to_string()));
        }
        v
    }

    /// Every setting as metadata under `run.`.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        run_metadata(&self.settings())
    }
}

impl fmt::Display for SampleRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&summary("sample", &self.settings()))
    }
}

fn parse_interval(s: &str) -> CliResult<(f32, f32)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || {
        CliError::new(format!(
            "--cfg-interval {s:?}: expected MIN,MAX with 0 <= MIN <= MAX <= 1"
        ))
    };
    match parts.as_slice() {
        [a, b] => {
            let (a, b): (f32, f32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if 0.0 <= a && a <= b && b <= 1.0 {
                Ok((a, b))
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// The shift base and preview guidance scale a training run recorded in its checkpoint's
/// `config` metadata (absent for reference checkpoints). Metadata that is there but cannot
/// be read, or holds values out of range, is an error naming the checkpoint, never a silent
/// default.
pub fn training_sampling_defaults(ckpt: &Path) -> CliResult<(Option<usize>, Option<f32>)> {
    let Some(meta) = checkpoint_metadata(ckpt) else {
        return Ok((None, None));
    };
    let Some(text) = meta.iter().find(|(k, _)| k == "config").map(|(_, v)| v) else {
        return Ok((None, None));
    };
    let source = format!("{} (metadata config)", ckpt.display());
    let v = rae_core::json::parse_named(text, &source)?;
    let bad = |key: &str, x: &JsonValue, want: &str| {
        CliError::new(format!("{source}: {key} = {x} is not {want}"))
    };
    let shift = match v.get("shift_base") {
        None | Some(JsonValue::Null) => None,
        Some(x) => {
            let want = "a shift base (an integer in 0..=2^24)";
            let s = x.as_usize().ok_or_else(|| bad("shift_base", x, want))?;
            if s > crate::limits::MAX_SHIFT_BASE {
                return Err(bad("shift_base", x, want));
            }
            Some(s)
        }
    };
    let cfg = match v.get("sample_cfg") {
        None | Some(JsonValue::Null) => None,
        Some(x) => {
            let want = "a finite guidance scale";
            let w = x.as_f64().ok_or_else(|| bad("sample_cfg", x, want))?;
            if !w.is_finite() || w.abs() > crate::limits::MAX_GUIDANCE {
                return Err(bad("sample_cfg", x, want));
            }
            Some(w as f32)
        }
    };
    Ok((shift, cfg))
}
