//! Range checks of every numeric setting of a command, made once after the flags and the
//! YAML config have been merged and before any work starts. A value out of range is an
//! error naming the flag (and the YAML key that can set it), the value and the allowed
//! range, never a panic, an abort or a silent substitute. Model sizes from files are checked
//! in `rae_core::limits`.

use crate::cli::{Command, SampleArgs, TrainArgs};
use crate::errors::{CliError, CliResult};

/// Largest batch (`--batch-size`, `training.global_batch_size`).
pub const MAX_BATCH: usize = 65_536;
/// Largest number of sampling grid points (`--steps`, `--sample-steps`).
pub const MAX_SAMPLE_STEPS: usize = 100_000;
/// Largest `--num` (samples per class).
pub const MAX_NUM: usize = 100_000;
/// Largest latent values one `sample` run holds at once (all samples are drawn together):
/// 2³¹ values, 8 GiB in f32.
pub const MAX_SAMPLE_VALUES: u128 = 1 << 31;
/// Largest guidance scale magnitude (`--cfg-scale`, `--sample-cfg`, `guidance.scale`).
pub const MAX_GUIDANCE: f64 = 1000.0;
/// Largest shift base dimension (`--shift-base`, `misc.time_dist_shift_base`).
pub const MAX_SHIFT_BASE: usize = 1 << 24;
/// Largest side of `builtin-data --size`.
pub const MAX_BUILTIN_SIDE: usize = 4096;
/// Largest `builtin-data --per-class`.
pub const MAX_BUILTIN_PER_CLASS: usize = 100_000;

fn refuse(flag: &str, yaml: Option<&str>, value: impl std::fmt::Display, range: &str) -> CliError {
    let also = yaml.map_or(String::new(), |k| format!(" (or YAML {k})"));
    CliError::new(format!(
        "{flag}{also} = {value} is outside the allowed range {range}"
    ))
}

/// `value` in `lo..=hi`.
pub fn int(flag: &str, yaml: Option<&str>, value: usize, lo: usize, hi: usize) -> CliResult<()> {
    if value < lo || value > hi {
        return Err(refuse(flag, yaml, value, &format!("{lo}..={hi}")));
    }
    Ok(())
}

/// `value` finite and in `[lo, hi]`.
pub fn real(flag: &str, yaml: Option<&str>, value: f64, lo: f64, hi: f64) -> CliResult<()> {
    if !value.is_finite() || value < lo || value > hi {
        return Err(refuse(flag, yaml, value, &format!("[{lo}, {hi}] (finite)")));
    }
    Ok(())
}

fn guidance(flag: &str, yaml: Option<&str>, w: Option<f32>) -> CliResult<()> {
    match w {
        Some(w) => real(flag, yaml, w as f64, -MAX_GUIDANCE, MAX_GUIDANCE),
        None => Ok(()),
    }
}

fn shift_base(yaml: &str, s: Option<usize>) -> CliResult<()> {
    match s {
        Some(s) => int("--shift-base", Some(yaml), s, 0, MAX_SHIFT_BASE),
        None => Ok(()),
    }
}

fn check_train(a: &TrainArgs) -> CliResult<()> {
    if let Some(bs) = a.batch_size {
        int(
            "--batch-size",
            Some("training.global_batch_size"),
            bs,
            1,
            MAX_BATCH,
        )?;
    }
    for (flag, v) in [("--lr", a.lr), ("--final-lr", a.final_lr)] {
        if let Some(v) = v {
            // Any finite rate: an absurd one is how a non-finite stop is tested.
            real(flag, Some("training.optimizer.lr"), v, 0.0, f64::MAX)?;
        }
    }
    if let Some(d) = a.ema_decay {
        real(
            "--ema-decay",
            Some("training.ema_decay"),
            d as f64,
            0.0,
            1.0,
        )?;
    }
    if let Some(c) = a.clip {
        // 0 switches clipping off.
        real("--clip", Some("training.clip_grad"), c as f64, 0.0, 1e9)?;
    }
    real(
        "--noise-tau",
        Some("stage_1.params.noise_tau"),
        a.noise_tau as f64,
        0.0,
        1e3,
    )?;
    shift_base("misc.time_dist_shift_base", a.shift_base)?;
    int(
        "--sample-steps",
        Some("sampler.params.num_steps"),
        a.sample_steps,
        1,
        MAX_SAMPLE_STEPS,
    )?;
    guidance("--sample-cfg", Some("training.cfg_scale"), a.sample_cfg)?;
    int(
        "--log-every",
        Some("training.log_interval"),
        a.log_every as usize,
        1,
        usize::MAX,
    )?;
    int("--ckpt-every", None, a.ckpt_every as usize, 1, usize::MAX)?;
    if a.data.builtin_size == 0 {
        return Err(refuse("--builtin-size", None, 0, "1.."));
    }
    Ok(())
}

fn check_sample(a: &SampleArgs) -> CliResult<()> {
    int(
        "--steps",
        Some("sampler.params.num_steps"),
        a.steps,
        1,
        MAX_SAMPLE_STEPS,
    )?;
    int("--num", None, a.num, 1, MAX_NUM)?;
    guidance("--cfg-scale", Some("guidance.scale"), a.cfg_scale)?;
    shift_base("misc.time_dist_shift_base", a.shift_base)
}

/// Checks the numeric settings of `command` (after any `--config` was applied).
pub fn check_command(command: &Command) -> CliResult<()> {
    match command {
        Command::Train(a) => check_train(a),
        Command::Sample(a) => check_sample(a),
        Command::Encode(a) => int("--batch-size", None, a.batch_size, 1, MAX_BATCH),
        Command::Stats(a) => int("--batch-size", None, a.batch_size, 1, MAX_BATCH),
        Command::Eval(a) => int("--batch-size", None, a.batch_size, 1, MAX_BATCH),
        Command::BuiltinData {
            per_class, size, ..
        } => {
            int("--per-class", None, *per_class, 1, MAX_BUILTIN_PER_CLASS)?;
            int("--size", None, *size, 8, MAX_BUILTIN_SIDE)
        }
        Command::Decode(_) | Command::Reconstruct(_) | Command::Inspect { .. } => Ok(()),
        Command::Convert { .. } | Command::Export { .. } => Ok(()),
    }
}

/// All `samples` latents of `per_sample` values each must fit [`MAX_SAMPLE_VALUES`] (a
/// `sample` run draws them together).
pub fn check_sample_volume(samples: usize, per_sample: usize) -> CliResult<()> {
    let total = samples as u128 * per_sample as u128;
    if total > MAX_SAMPLE_VALUES {
        return Err(CliError::new(format!(
            "--num × classes = {samples} samples of {per_sample} latent values = {total} values \
             at once, more than the limit MAX_SAMPLE_VALUES = {MAX_SAMPLE_VALUES}: draw them in \
             several runs (--classes, --num, --seed)"
        )));
    }
    Ok(())
}
