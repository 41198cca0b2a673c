//! Settling a run: flags, a reference YAML config, presets and what a checkpoint recorded
//! become the finished [`TrainRun`] (then a [`Stage1Run`] or [`Stage2Run`] per stage) and
//! [`SampleRun`] that the commands read (`train_run.rs`, `stage_run.rs`, `sample_run.rs`,
//! `optim.rs`, `rae_paths.rs`); every default is decided there, once.
//!
//! The reference's YAML configs (`configs/stage1/...`, `configs/stage2/...` of the reference
//! repository) for `rae-cli train --config X.yaml` and `rae-cli sample --config X.yaml`:
//!
//! A config has the top-level sections `stage_1` (the RAE), `stage_2` (the DiT-DH),
//! `transport`, `sampler`, `guidance`, `misc`, `training`, `gan` and `eval` with the
//! reference's parameter names. Each setting a flag also expresses is written into the
//! command's arguments unless that flag was given on the command line (flags win); what no
//! flag expresses (the DiT architecture, AdamW betas, an epoch-based learning-rate schedule,
//! the number of epochs) travels in a [`TrainPlan`] or [`SamplePlan`]. Unknown keys are
//! reported one line per key with its dotted path. `gan` (stage 1's LPIPS and
//! discriminator, §2.7) is read by `apply_gan.rs`.
//!
//! Relative paths are looked up as the reference does, from the current folder, and then from
//! the config file's folder and each folder above it (so a config inside a checkout of the
//! reference finds `models/...` and `configs/decoder/...` from anywhere). A HuggingFace hub id
//! such as `facebook/dinov2-with-registers-base` cannot be downloaded: it must name a local
//! folder.

mod apply;
mod apply_gan;
pub mod gan;
pub mod gan_args;
mod optim;
pub mod plan;
pub mod rae_paths;
mod read_plan;
pub mod sample_run;
mod schema;
pub mod stage_run;
pub mod train_run;
pub mod yaml;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use rae_core::json::JsonValue;
use yaml_rust2::Yaml;

pub use plan::{dit_for_sample, SamplePlan, SchedulePlan, Span, TrainPlan};
pub use rae_paths::resolve_rae;
pub use sample_run::{ClassChoice, SampleRun};
pub use stage_run::{Stage1Run, Stage2Data, Stage2Run, StageFiles};
pub use train_run::{DataChoice, TrainMode, TrainRun};
pub use yaml::{MAX_CONFIG_BYTES, MAX_YAML_DEPTH};

use crate::cli::{Cli, Command};
use crate::errors::{CliError, CliResult};
use schema::{join, walk};

/// YAML → JSON, naming the dotted path of anything JSON cannot hold.
fn yaml_to_json(y: &Yaml, path: &str, source: &str) -> CliResult<JsonValue> {
    let bad = |what: &str| {
        CliError::new(format!(
            "config {source}: {}: {what}",
            if path.is_empty() { "(top level)" } else { path }
        ))
    };
    Ok(match y {
        Yaml::Null => JsonValue::Null,
        Yaml::Boolean(b) => JsonValue::Bool(*b),
        Yaml::Integer(i) => JsonValue::Number(*i as f64),
        Yaml::Real(s) => match y.as_f64() {
            Some(x) if x.is_finite() => JsonValue::Number(x),
            _ => return Err(bad(&format!("{s} is not a finite number"))),
        },
        Yaml::String(s) => JsonValue::String(s.clone()),
        Yaml::Array(items) => JsonValue::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{path}[{i}]"), source))
                .collect::<CliResult<_>>()?,
        ),
        Yaml::Hash(h) => {
            let mut members = Vec::with_capacity(h.len());
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(s) => s.clone(),
                    _ => return Err(bad("mapping keys must be plain scalars")),
                };
                let child = join(path, &key);
                members.push((key, yaml_to_json(v, &child, source)?));
            }
            JsonValue::Object(members)
        }
        Yaml::Alias(_) => return Err(bad("YAML aliases are not supported")),
        Yaml::BadValue => return Err(bad("unreadable value")),
    })
}

/// A parsed reference config.

#[derive(Debug, Clone, PartialEq)]
pub struct RefConfig {
    /// The file it was read from (relative paths in it are resolved from its folder too).
    pub path: PathBuf,
    /// The document, as JSON.
    pub root: JsonValue,
}

impl RefConfig {
    /// Reads and parses a config file (a regular file of at most [`MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path) -> CliResult<Self> {
        Self::parse(&yaml::read_config_text(path)?, path)
    }

    /// Parses config text; `path` names it in messages and anchors its relative paths.
    /// Aliases and nesting deeper than [`MAX_YAML_DEPTH`] are refused before anything is
    /// built (see `config/yaml.rs`).
    pub fn parse(text: &str, path: &Path) -> CliResult<Self> {
        let source = path.display().to_string();
        let docs = yaml::parse_documents(text, &source)?;
        let root = match docs.as_slice() {
            [] => JsonValue::Object(Vec::new()),
            [doc] => yaml_to_json(doc, "", &source)?,
            _ => {
                return Err(CliError::new(format!(
                    "config {source}: holds {} YAML documents; expected one",
                    docs.len()
                )))
            }
        };
        if root.as_object().is_none() && !root.is_null() {
            return Err(CliError::new(format!(
                "config {source}: the top level must be a mapping of sections (stage_1, stage_2, ...)"
            )));
        }
        Ok(RefConfig {
            path: path.to_path_buf(),
            root,
        })
    }

    fn source(&self) -> String {
        self.path.display().to_string()
    }

    /// The value at a dotted path (`training.optimizer.lr`).
    pub fn get(&self, dotted: &str) -> Option<&JsonValue> {
        let mut v = &self.root;
        for k in dotted.split('.') {
            v = v.get(k)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn err(&self, key: &str, why: impl std::fmt::Display) -> CliError {
        CliError::new(format!("config {}: {key}: {why}", self.source()))
    }

    /// A number (numeric strings such as `1e-6` too, as OmegaConf reads them).
    pub fn num(&self, key: &str) -> CliResult<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    /// A non-negative integer.
    pub fn uint(&self, key: &str) -> CliResult<Option<u64>> {
        match self.num(key)? {
            None => Ok(None),
            Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 => Ok(Some(x as u64)),
            Some(x) => Err(self.err(key, format!("expected a non-negative integer, found {x}"))),
        }
    }

    /// A string.
    pub fn string(&self, key: &str) -> CliResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(JsonValue::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(key, format!("expected a string, found {v}"))),
        }
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> CliResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    /// The first of several spellings that is present (`t_min` / `t-min`).
    fn num_any(&self, keys: &[&str]) -> CliResult<Option<f64>> {
        for k in keys {
            if let Some(x) = self.num(k)? {
                return Ok(Some(x));
            }
        }
        Ok(None)
    }

    /// Whether a top-level section is present.
    pub fn has(&self, section: &str) -> bool {
        self.get(section).is_some()
    }

    /// Dotted paths of the keys no section of the reference has.
    pub fn unknown_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out
    }

    /// Lines to show the user: one per unknown key, and what is accepted but not done.
    pub fn notes(&self) -> CliResult<Vec<String>> {
        let src = self.source();
        let mut notes: Vec<String> = self
            .unknown_keys()
            .into_iter()
            .map(|k| format!("config {src}: unknown key {k}"))
            .collect();
        if self.has("eval") {
            notes.push(format!(
                "config {src}: eval: evaluation is not run during training; use `rae-cli eval` on the samples"
            ));
        }
        if let Some(n) = self.uint("training.grad_accum_steps")? {
            if n > 1 {
                notes.push(format!(
                    "config {src}: training.grad_accum_steps {n}: gradient accumulation is not implemented; each step uses the whole batch"
                ));
            }
        }
        if self.has("training") && !self.has("training.scheduler") {
            let legacy: Vec<&str> = ["schedule_type", "decay_start_epoch", "decay_end_epoch"]
                .into_iter()
                .filter(|k| self.has(&format!("training.{k}")))
                .collect();
            if !legacy.is_empty() {
                notes.push(format!(
                    "config {src}: training.{}: without training.scheduler the reference builds no schedule from these either; the learning rate is constant",
                    legacy.join(", training.")
                ));
            }
        }
        if let Some(dim) = self.uint("misc.time_dist_shift_dim")? {
            if let Some(JsonValue::Array(l)) = self.get("misc.latent_size") {
                let prod: Option<u64> = l.iter().map(|v| v.as_usize().map(|x| x as u64)).product();
                if prod.is_some_and(|p| p != dim) {
                    notes.push(format!(
                        "config {src}: misc.time_dist_shift_dim {dim} differs from the product of misc.latent_size; the shift uses the latent's real size"
                    ));
                }
            }
        }
        Ok(notes)
    }
}

/// The ids of the arguments given on the command line (not defaults).
pub fn explicit_ids(m: &ArgMatches) -> BTreeSet<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Applies `--config` of `train` and `sample` to the parsed command line; returns the lines
/// to show the user (unknown keys, what is not implemented).
pub fn apply_config(cli: &mut Cli, matches: &ArgMatches) -> CliResult<Vec<String>> {
    let (name, sub) = match matches.subcommand() {
        Some((name, sub)) => (name, sub),
        None => return Ok(Vec::new()),
    };
    let explicit = explicit_ids(sub);
    let is = |id: &str| explicit.contains(id);
    let config = match &cli.command {
        Command::Train(a) if name == "train" => a.config.clone(),
        Command::Sample(a) if name == "sample" => a.config.clone(),
        _ => None,
    };
    let Some(path) = config else {
        return Ok(Vec::new());
    };
    let rc = RefConfig::load(&path)?;
    if !is("precision") {
        if let Some(p) = rc.string("misc.precision")? {
            cli.precision = Some(p);
        }
    }
    match &mut cli.command {
        Command::Train(a) => rc.apply_train(a, &is),
        Command::Sample(a) => rc.apply_sample(a, &is),
        _ => Ok(Vec::new()),
    }
}

/// Parses a command line (program name first) and applies `--config`, as the binary does;
/// usage errors become a [`CliError`] with clap's message.
pub fn parse_args<I, T>(argv: I) -> CliResult<(Cli, Vec<String>)>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| CliError::new(e.to_string()))?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| CliError::new(e.to_string()))?;
    let notes = apply_config(&mut cli, &matches)?;
    Ok((cli, notes))
}
