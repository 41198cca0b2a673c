//! `rae-cli train`: the built-in tiny pipeline, stage 1 (decoder) and stage 2 (DiT-DH),
//! with atomic, resumable checkpoints.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use rae_core::flow::TimeDist;
use rae_core::json::JsonValue;
use rae_core::models::{Dinov2Encoder, DitDh, Encoder, LatentStats, NoiseRule, Rae, RaeDecoder};
use rae_core::nn::{save_module, Init, Module};
use rae_core::optim::{Decay, LrSchedule, Warmup};
use rae_core::train::{
    stage1_step, stage2_step, Optimizer, OptimizerConfig, RngState, Stage1Config, Stage2Config,
    StepReport, TrainCheckpoint,
};
use rae_core::{Backend, Error, Tensor};

use super::generate::{generate, initial_noise, SampleSettings};
use super::stats::{compute_stats, StatsRule};
use crate::backends::Job;
use crate::ckpt::{check_writable_dir, save_safetensors};
use crate::cli::TrainArgs;
use crate::data::{load_batch, BatchOrder, Dataset, ImageFolder, Shapes};
use crate::errors::{CliError, CliResult, Context};
use crate::files::{load_tensor_file, TensorFile};
use crate::image_io::{from_chw, grid, save_png};
use crate::presets::{self, RaePaths};
use crate::progress::{bar, Throughput};

/// Seed of the built-in frozen encoder (fixed: the tiny RAE is the same for every run).
pub const TINY_ENCODER_SEED: u64 = 0x00E1_C0DE;
/// Seed of the built-in dataset.
pub const BUILTIN_DATA_SEED: u64 = 7;
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

/// The `train` command.
#[derive(Debug)]
pub struct TrainJob(pub TrainArgs);

impl Job for TrainJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        check_writable_dir(&a.out)?;
        let pipeline = a.stage.is_none() && !a.rae.given() && a.latents.is_none();
        if pipeline {
            return run_pipeline(b, &a);
        }
        match a.stage.unwrap_or(2) {
            1 => {
                let paths = rae_paths(&a)?;
                let encoder = presets::load_encoder(b, &paths.encoder)?;
                let cfg = match &paths.decoder_config {
                    Some(c) => presets::decoder_config(c)?,
                    None => {
                        return Err(CliError::new(
                            "--stage 1 needs --decoder-config (a config.json, or B, L, XL)",
                        ))
                    }
                };
                let ds = open_data(&a, cfg.image_size)?;
                train_decoder(
                    b,
                    &a,
                    encoder,
                    cfg,
                    ds.as_ref(),
                    &a.out,
                    &a.out.join("decoder.safetensors"),
                    a.max_steps.unwrap_or(1000),
                )?;
                Ok(())
            }
            2 => {
                let paths = rae_paths(&a)?;
                let rae = presets::load_rae(b, &paths)?;
                if rae.stats.is_none() {
                    return Err(CliError::new("stage 2 needs latent statistics (--stats or stats.safetensors in the RAE folder)"));
                }
                let source = match &a.latents {
                    Some(p) => LatentSource::Cache(load_latents(b, p)?),
                    None => LatentSource::Images(open_data(&a, rae.decoder.config.image_size)?),
                };
                train_dit(b, &a, &rae, source, &a.out, a.max_steps.unwrap_or(1000))?;
                Ok(())
            }
            s => Err(CliError::new(format!("--stage {s}: must be 1 or 2"))),
        }
    }
}

/// Resolves the RAE location flags.
pub fn rae_paths(a: &TrainArgs) -> CliResult<RaePaths> {
    resolve_rae(&a.rae, None)
}

/// Resolves `--rae`, `--encoder`, `--decoder`, ... with `default_dir` as the fallback folder.
pub fn resolve_rae(r: &crate::cli::RaeArgs, default_dir: Option<&Path>) -> CliResult<RaePaths> {
    let dir = r.rae.clone().or_else(|| default_dir.map(Path::to_path_buf));
    let mut p = match &dir {
        Some(d) => RaePaths::in_dir(d),
        None => {
            let enc = r
                .encoder
                .clone()
                .ok_or_else(|| CliError::new("give --rae DIR or --encoder DIR"))?;
            RaePaths {
                encoder: enc,
                decoder: r.decoder.clone().unwrap_or_default(),
                decoder_config: None,
                stats: None,
                encoder_input_size: None,
            }
        }
    };
    if let Some(e) = &r.encoder {
        p.encoder = e.clone();
    }
    if let Some(d) = &r.decoder {
        p.decoder = d.clone();
    }
    if r.decoder_config.is_some() {
        p.decoder_config = r.decoder_config.clone();
    }
    if let Some(s) = &r.stats {
        p.stats = Some(s.clone());
    }
    if r.encoder_input_size.is_some() {
        p.encoder_input_size = r.encoder_input_size;
    }
    Ok(p)
}

fn open_data(a: &TrainArgs, default_size: usize) -> CliResult<Box<dyn Dataset>> {
    let size = a.data.image_size.unwrap_or(default_size);
    Ok(match &a.data.data {
        Some(dir) => Box::new(ImageFolder::open(dir, size)?),
        None => Box::new(Shapes::new(size, a.data.builtin_size, BUILTIN_DATA_SEED)),
    })
}

/// The built-in default: tiny frozen encoder, decoder (stage 1), statistics, DiT-DH
/// (stage 2), each skipped when its output already exists (so the command can be re-run
/// to continue).
fn run_pipeline<B: Backend>(b: &B, a: &TrainArgs) -> CliResult<()> {
    let start = Instant::now();
    let rae_dir = a.out.join("rae");
    let enc_dir = rae_dir.join("encoder");
    let dec_path = rae_dir.join("decoder.safetensors");
    let stats_path = rae_dir.join("stats.safetensors");
    if a.fresh {
        for p in [
            a.out.join("decoder-train.safetensors"),
            a.out.join("dit-train.safetensors"),
            dec_path.clone(),
            stats_path.clone(),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
    let dec_cfg = presets::tiny_decoder();
    let ds = open_data(a, dec_cfg.image_size)?;
    eprintln!(
        "data: {} ({} images, {} classes, {}×{})",
        a.data
            .data
            .as_ref()
            .map_or("built-in coloured shapes".to_string(), |d| d
                .display()
                .to_string()),
        ds.len(),
        ds.classes().len(),
        ds.image_size(),
        ds.image_size()
    );
    if ds.image_size() != dec_cfg.image_size {
        return Err(CliError::new(format!(
            "the tiny pipeline works on {0}×{0} images: pass --image-size {0}",
            dec_cfg.image_size
        )));
    }
    // 1. The frozen encoder, from a fixed seed.
    let encoder = if enc_dir.join("config.json").exists() {
        presets::load_encoder(b, &enc_dir)?
    } else {
        let enc = Dinov2Encoder::new(
            b,
            &mut Init::new(TINY_ENCODER_SEED),
            presets::tiny_encoder(),
        )?;
        presets::save_encoder(b, &enc, &enc_dir)?;
        eprintln!(
            "encoder: tiny DINOv2-style ({} params, frozen, seed {TINY_ENCODER_SEED:#x}) -> {}",
            presets::count(&enc),
            enc_dir.display()
        );
        enc.into()
    };
    // 2. Stage 1: the decoder (the trained EMA weights are used as they are; what was saved
    // is read back only when this stage is skipped).
    let decoder = if !dec_path.exists() {
        let steps = a.stage1_steps.unwrap_or(TINY_STAGE1_STEPS);
        train_decoder(
            b,
            a,
            encoder.clone(),
            dec_cfg.clone(),
            ds.as_ref(),
            &a.out,
            &dec_path,
            steps,
        )?
    } else {
        eprintln!(
            "stage 1: {} exists, skipping decoder training",
            dec_path.display()
        );
        presets::load_decoder(b, &dec_path, None)?
    };
    let mut rae = presets::assemble_rae(encoder, decoder, None, None)?;
    // 3. Latent statistics (exact moments over the dataset).
    let stats = if !stats_path.exists() {
        let (mean, var) = compute_stats(b, &rae, ds.as_ref(), 64, StatsRule::Exact, false, a.seed)?;
        let [c, h, w] = rae.latent_dims();
        super::stats::save_stats(&stats_path, &mean, &var, [c, h, w])?;
        eprintln!(
            "statistics: exact per-element moments over {} images -> {}",
            ds.len(),
            stats_path.display()
        );
        LatentStats::new(b, &mean, &var, presets::STATS_EPS)?
    } else {
        presets::load_stats(b, &stats_path)?
    };
    rae.stats = Some(stats);
    // 4. Stage 2: DiT-DH.
    let steps = a.max_steps.unwrap_or(TINY_STAGE2_STEPS);
    let dit = train_dit(b, a, &rae, LatentSource::Images(ds), &a.out, steps)?;
    let _ = dit;
    eprintln!(
        "done in {:.1} s: {} (sample more with `rae-cli sample`)",
        start.elapsed().as_secs_f64(),
        a.out.join("samples").join("final.png").display()
    );
    Ok(())
}

fn log_line(out: &Path, line: &str) {
    eprintln!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("train.log"))
    {
        let _ = writeln!(f, "{line}");
    }
}

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
        .and_then(|p| p.lr_schedule(steps_per_epoch, a))
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

fn opt_config(
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

fn schedule_json(o: &OptimizerConfig) -> JsonValue {
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

/// Writes a decoder with its configuration in the metadata.
pub fn save_decoder<B: Backend>(b: &B, dec: &RaeDecoder<B>, path: &Path) -> CliResult<()> {
    let tensors = save_module(b, dec)?;
    let cfg = dec.config.to_json().to_json_string()?;
    save_safetensors(
        path,
        &tensors,
        &[
            ("format".into(), "rae-decoder".into()),
            ("config".into(), cfg),
        ],
    )
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

fn restore<B: Backend, M: Module<B> + Clone>(
    b: &B,
    path: &Path,
    model: &mut M,
    config: OptimizerConfig,
    name: &str,
) -> CliResult<(Optimizer<B>, RngState)> {
    let f = load_tensor_file(path)?;
    let ck = TrainCheckpoint {
        tensors: f.tensors,
        metadata: f.metadata,
    };
    let r = ck
        .restore(b, model, config, name, &path.display().to_string())
        .context(format!("resuming from {}", path.display()))?;
    Ok(r)
}

/// Stage 1: trains a decoder for `encoder` to `steps` optimiser steps.
pub fn train_decoder<B: Backend>(
    b: &B,
    a: &TrainArgs,
    encoder: Encoder<B>,
    cfg: rae_core::models::DecoderConfig,
    ds: &dyn Dataset,
    out: &Path,
    final_path: &Path,
    steps: u64,
) -> CliResult<RaeDecoder<B>> {
    let tiny = cfg == presets::tiny_decoder();
    let bs = a.batch_size.unwrap_or(if tiny { 32 } else { 8 });
    let ckpt = out.join("decoder-train.safetensors");
    let decoder = RaeDecoder::new(b, &mut Init::new(a.seed ^ 0xDEC0), cfg.clone())?;
    let mut rae = presets::assemble_rae(encoder, decoder, None, None)?;
    let spe = (ds.len() / bs).max(1) as u64;
    // [config hook] training.epochs of a reference YAML, unless --max-steps.
    let steps = a
        .plan
        .as_ref()
        .and_then(|p| p.total_steps(a.max_steps, spe))
        .unwrap_or(steps);
    let ocfg = opt_config(a, steps, tiny, 1, spe)?;
    let (mut opt, mut rng) = if resume_decision(a, &ckpt, a.stage.is_none())? {
        let r = restore(b, &ckpt, &mut rae.decoder, ocfg.clone(), "RAE decoder")?;
        eprintln!(
            "stage 1: resuming {} at step {}",
            ckpt.display(),
            r.0.step()
        );
        r
    } else {
        (
            Optimizer::new(b, &rae.decoder, ocfg.clone())?,
            RngState::new(a.seed),
        )
    };
    let s1 = Stage1Config {
        noise_tau: a.noise_tau,
        noise_rule: noise_rule(&a.noise_rule)?,
    };
    let meta_cfg = JsonValue::object([
        ("stage", JsonValue::from(1u64)),
        ("decoder", cfg.to_json()),
        ("optimizer", schedule_json(&ocfg)),
        ("batch_size", bs.into()),
        ("noise_tau", (s1.noise_tau as f64).into()),
        ("noise_rule", a.noise_rule.as_str().into()),
        ("seed", a.seed.into()),
    ])
    .to_json_string()?;
    let extra = [
        ("format".to_string(), "rae-train".to_string()),
        ("kind".into(), "decoder".into()),
        ("config".into(), meta_cfg),
    ];
    eprintln!(
        "stage 1: decoder {} params, batch {bs}, {steps} steps, lr {:.1e}, noise τ {}",
        presets::count(&rae.decoder),
        ocfg.schedule.base_lr,
        s1.noise_tau
    );
    let mut order = BatchOrder::new(a.seed, ds.len(), false);
    let s = ds.image_size();
    let mut prog = StageProgress::new(a, out, "stage 1", "L1", steps, opt.step());
    let mut last_saved = opt.step();
    let stop = prog.stop;
    while opt.step() < stop {
        let step = opt.step();
        let (imgs, _) = load_batch(ds, &order.batch(step, bs))?;
        let x = b.upload(&imgs, &[bs, 3, s, s])?;
        let (loss, rep) = match stage1_step(b, &mut rae, &mut opt, &mut rng, &s1, &x) {
            Ok(r) => r,
            Err(e @ Error::NonFinite { .. }) => return Err(stopped(e, &ckpt, last_saved)),
            Err(e) => return Err(e.into()),
        };
        let done = opt.step();
        if prog.record(done, bs, loss, &rep) {
            let ck = TrainCheckpoint::capture(b, &rae.decoder, &opt, &rng, &extra)?;
            save_safetensors(&ckpt, &ck.tensors, &ck.metadata)?;
            last_saved = done;
        }
    }
    prog.pb.finish_and_clear();
    if stop < steps {
        return Err(CliError::new(format!(
            "stage 1 stopped at step {stop} of {steps} (--stop-at); continue with --resume"
        )));
    }
    let ema = opt.ema_model(&rae.decoder);
    save_decoder(b, &ema, final_path)?;
    eprintln!("stage 1: decoder (EMA) -> {}", final_path.display());
    Ok(ema)
}

fn stopped(e: Error, ckpt: &Path, last: u64) -> CliError {
    let keep = if ckpt.exists() {
        format!(
            "the last good checkpoint {} (step {last}) is kept",
            ckpt.display()
        )
    } else {
        "no checkpoint had been written yet".to_string()
    };
    CliError::new(format!(
        "training stopped: {e}; {keep}. Lower the learning rate (--lr) or check the data and resume with --resume."
    ))
}

/// Where stage-2 latents come from.
#[allow(missing_debug_implementations)]
pub enum LatentSource {
    /// Images encoded on the fly by the frozen encoder.
    Images(Box<dyn Dataset>),
    /// A latent cache written by `encode`.
    Cache(LatentCache),
}

/// Latents and labels in host memory.
#[derive(Debug, Clone)]
pub struct LatentCache {
    /// `[N, C, h, w]` normalised latents.
    pub latents: Vec<f32>,
    /// Per-latent shape `[C, h, w]`.
    pub dims: [usize; 3],
    /// Labels.
    pub labels: Vec<u32>,
    /// Class names.
    pub classes: usize,
}

/// Reads a latent cache written by `encode`.
pub fn load_latents<B: Backend>(_b: &B, path: &Path) -> CliResult<LatentCache> {
    let mut f = load_tensor_file(path)?;
    let lat = f
        .tensors
        .get("latents")
        .ok_or_else(|| CliError::new(format!("{} has no tensor \"latents\"", path.display())))?;
    if lat.shape.len() != 4 {
        return Err(CliError::new(format!(
            "{}: latents must be [N, C, h, w], found {:?}",
            path.display(),
            lat.shape
        )));
    }
    if f.meta("normalized") != Some("true") {
        return Err(CliError::new(format!(
            "{}: the latents are not normalised (encode them with a RAE that has statistics)",
            path.display()
        )));
    }
    let (n, dims) = (lat.shape[0], [lat.shape[1], lat.shape[2], lat.shape[3]]);
    let labels = match f.int("labels") {
        Some(l) if l.data.len() == n => crate::files::labels_u32(&l.data, path)?,
        _ => {
            return Err(CliError::new(format!(
                "{} has no \"labels\" for its {n} latents",
                path.display()
            )))
        }
    };
    let classes = f
        .meta("num_classes")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| labels.iter().max().map_or(1, |m| *m as usize + 1));
    // Moved out, not copied: the cache can be the size of a dataset.
    let latents = f
        .tensors
        .remove("latents")
        .map(|t| t.data)
        .unwrap_or_default();
    Ok(LatentCache {
        latents,
        dims,
        labels,
        classes,
    })
}

/// Stage 2: trains a DiT-DH on the RAE's latents to `steps` optimiser steps; writes preview
/// grids and a final grid.
pub fn train_dit<B: Backend>(
    b: &B,
    a: &TrainArgs,
    rae: &Rae<B>,
    source: LatentSource,
    out: &Path,
    steps: u64,
) -> CliResult<DitDh<B>> {
    let latent = rae.latent_dims();
    let (n_items, classes) = match &source {
        LatentSource::Images(ds) => (ds.len(), ds.classes().len()),
        LatentSource::Cache(c) => {
            if c.dims != latent {
                return Err(CliError::new(format!(
                    "the latent cache holds {:?} latents but the RAE makes {:?}",
                    c.dims, latent
                )));
            }
            (c.labels.len(), c.classes)
        }
    };
    // [config hook] stage_2.params of a reference YAML replace the preset.
    let from_config = a
        .plan
        .as_ref()
        .and_then(|p| p.dit_for(latent))
        .transpose()?;
    let tiny = from_config.is_none() && a.model.eq_ignore_ascii_case("tiny");
    let is_builtin = matches!(&source, LatentSource::Images(_)) && a.data.data.is_none();
    let cfg = match from_config {
        Some(c) => c,
        None => presets::dit_preset(&a.model, latent, classes)?,
    };
    let bs = a
        .batch_size
        .unwrap_or(if tiny { TINY_STAGE2_BATCH } else { 8 });
    let ckpt = out.join("dit-train.safetensors");
    let mut model = DitDh::new(b, &mut Init::new(a.seed ^ 0xD17), cfg.clone())?;
    let spe = (n_items / bs).max(1) as u64;
    // [config hook] training.epochs of a reference YAML, unless --max-steps.
    let steps = a
        .plan
        .as_ref()
        .and_then(|p| p.total_steps(a.max_steps, spe))
        .unwrap_or(steps);
    let ocfg = opt_config(a, steps, tiny, 2, spe)?;
    let (mut opt, mut rng) = if resume_decision(a, &ckpt, a.stage.is_none() && !a.rae.given())? {
        let r = restore(b, &ckpt, &mut model, ocfg.clone(), "DiT-DH")?;
        eprintln!(
            "stage 2: resuming {} at step {}",
            ckpt.display(),
            r.0.step()
        );
        r
    } else {
        (
            Optimizer::new(b, &model, ocfg.clone())?,
            RngState::new(a.seed),
        )
    };
    let dim = latent.iter().product::<usize>();
    // The tiny latents hold 2048 values, 96 times fewer than ImageNet's: with the reference
    // base 4096 the shift would be 0.71 and training would dwell on low noise, where the
    // class is already visible. Base 43 keeps s ≈ 6.9 as at ImageNet 256² (§4.3).
    let shift_base = a
        .shift_base
        .unwrap_or(if tiny { TINY_SHIFT_BASE } else { 4096 });
    let sample_cfg = a
        .sample_cfg
        .unwrap_or(if tiny { TINY_SAMPLE_CFG } else { 1.0 });
    let shift = super::generate::shift_for(dim, shift_base)?;
    let s2 = Stage2Config {
        time_dist: TimeDist::parse(&a.time_dist)?,
        shift,
        label_dropout: cfg.class_dropout_prob,
    };
    let meta_cfg = JsonValue::object([
        ("stage", JsonValue::from(2u64)),
        ("model", cfg.to_json()),
        ("optimizer", schedule_json(&ocfg)),
        ("batch_size", bs.into()),
        ("time_dist", a.time_dist.as_str().into()),
        ("shift", shift.into()),
        ("shift_base", shift_base.into()),
        ("sample_cfg", (sample_cfg as f64).into()),
        ("seed", a.seed.into()),
    ])
    .to_json_string()?;
    let extra = [
        ("format".to_string(), "rae-train".to_string()),
        ("kind".into(), "dit".into()),
        ("config".into(), meta_cfg),
    ];
    eprintln!(
        "stage 2: DiT-DH {} params, latents {:?}, shift {:.3}, batch {bs}, {steps} steps, lr {:.1e}",
        presets::count(&model),
        latent,
        shift,
        ocfg.schedule.base_lr
    );
    let mut order = BatchOrder::new(a.seed, n_items, matches!(source, LatentSource::Images(_)));
    let mut prog = StageProgress::new(a, out, "stage 2", "loss", steps, opt.step());
    let mut last_saved = opt.step();
    let preview = SampleSettings {
        steps: a.sample_steps,
        guidance_scale: sample_cfg,
        shift_base,
        ..SampleSettings::default()
    };
    let stop = prog.stop;
    while opt.step() < stop {
        let step = opt.step();
        let items = order.batch(step, bs);
        let (z, labels) = match &source {
            LatentSource::Images(ds) => {
                let (imgs, labels) = load_batch(ds.as_ref(), &items)?;
                let s = ds.image_size();
                let x = b.upload(&imgs, &[bs, 3, s, s])?;
                (rae.encode(b, &x)?, labels)
            }
            LatentSource::Cache(c) => {
                let mut v = Vec::with_capacity(bs * dim);
                let mut l = Vec::with_capacity(bs);
                for (i, _) in &items {
                    v.extend_from_slice(&c.latents[i * dim..(i + 1) * dim]);
                    l.push(c.labels[*i]);
                }
                (b.upload(&v, &[bs, latent[0], latent[1], latent[2]])?, l)
            }
        };
        let (loss, rep) = match stage2_step(b, &mut model, &mut opt, &mut rng, &s2, &z, &labels) {
            Ok(r) => r,
            Err(e @ Error::NonFinite { .. }) => return Err(stopped(e, &ckpt, last_saved)),
            Err(e) => return Err(e.into()),
        };
        let done = opt.step();
        if prog.record(done, bs, loss, &rep) {
            let ck = TrainCheckpoint::capture(b, &model, &opt, &rng, &extra)?;
            save_safetensors(&ckpt, &ck.tensors, &ck.metadata)?;
            last_saved = done;
        }
        if a.sample_every > 0 && done % a.sample_every == 0 && done != steps {
            let ema = opt.ema_model(&model);
            let path = out.join("samples").join(format!("step-{done:06}.png"));
            prog.pb
                .suspend(|| preview_grid(b, rae, &ema, classes, 1, &preview, &path))?;
            if is_builtin {
                report_class_accuracy(b, rae, &ema, &preview, out, done)?;
            }
        }
    }
    prog.pb.finish_and_clear();
    if stop < steps {
        eprintln!("stage 2: stopped at step {stop} of {steps} (--stop-at); continue with --resume");
        return Ok(opt.ema_model(&model));
    }
    let ema = opt.ema_model(&model);
    let path = out.join("samples").join("final.png");
    preview_grid(b, rae, &ema, classes, 4, &preview, &path)?;
    if is_builtin {
        report_class_accuracy(b, rae, &ema, &preview, out, steps)?;
    }
    eprintln!(
        "stage 2: sample grid (EMA, {} per class, one row per class) -> {}",
        4,
        path.display()
    );
    Ok(ema)
}

/// Samples `per_class` images of each of the first (up to 10) classes and writes a grid with
/// one row per class.
pub fn preview_grid<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    model: &DitDh<B>,
    classes: usize,
    per_class: usize,
    s: &SampleSettings,
    path: &Path,
) -> CliResult<(Vec<image::RgbImage>, Vec<u32>)> {
    let k = classes.min(10);
    let labels: Vec<u32> = (0..k as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect();
    let noise = initial_noise(b, model, labels.len(), s.seed)?;
    let z = generate(b, model, None, &labels, noise, s)?;
    let imgs = decode_images(b, rae, &z)?;
    save_png(path, &grid(&imgs, per_class))?;
    Ok((imgs, labels))
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

/// Loads a DiT checkpoint written by `train` (EMA weights preferred), or reference weights
/// with an explicit configuration.
pub fn load_dit<B: Backend>(
    b: &B,
    path: &Path,
    model: Option<&str>,
    latent: [usize; 3],
    classes: Option<usize>,
) -> CliResult<DitDh<B>> {
    load_dit_from(b, &load_tensor_file(path)?, path, model, latent, classes)
}

/// [`load_dit`] from a file already read from `path`.
pub fn load_dit_from<B: Backend>(
    b: &B,
    f: &TensorFile,
    path: &Path,
    model: Option<&str>,
    latent: [usize; 3],
    classes: Option<usize>,
) -> CliResult<DitDh<B>> {
    let source = path.display().to_string();
    let cfg = match (f.meta("config"), model) {
        (_, Some(m)) if m.ends_with(".json") => rae_core::models::DitConfig::from_json(&crate::files::load_json(Path::new(m))?, m)?,
        (Some(text), None) => {
            let v = rae_core::json::parse_named(text, &format!("{source} (metadata config)"))?;
            let m = v.get("model").cloned().unwrap_or(v);
            rae_core::models::DitConfig::from_json(&m, &source)?
        }
        (_, Some(name)) => {
            let classes = classes.unwrap_or(1000);
            presets::dit_preset(name, latent, classes)?
        }
        (None, None) => {
            return Err(CliError::new(format!(
                "{source} carries no model configuration: pass --model (a DiT config .json, or S, B, L, XL)"
            )))
        }
    };
    dit_from_file(b, f, path, cfg)
}

/// A DiT-DH of configuration `cfg` with the weights of `f` (read from `path`; the EMA half
/// when the file holds both).
pub fn dit_from_file<B: Backend>(
    b: &B,
    f: &TensorFile,
    path: &Path,
    cfg: rae_core::models::DitConfig,
) -> CliResult<DitDh<B>> {
    let mut m = DitDh::new(b, &mut Init::new(0), cfg)?;
    let weights = crate::files::pick_weights(&f.tensors, true);
    m.load(b, &weights)
        .context(format!("loading {}", path.display()))?;
    Ok(m)
}

/// An error unless `path` holds DiT weights (`t_embedder.W`, possibly under `ema.` or
/// `model.`), naming the file and what it holds instead. A safetensors file is checked by
/// its header alone; any other file has to be read whole, and is returned so that the
/// caller does not read it again.
pub fn check_dit_checkpoint(path: &Path) -> CliResult<Option<TensorFile>> {
    let (names, file): (Vec<String>, _) = match crate::files::safetensors_header(path) {
        Some((names, _)) => (names, None),
        None => {
            let f = load_tensor_file(path)?;
            (f.tensors.names().map(str::to_string).collect(), Some(f))
        }
    };
    let has = ["t_embedder.W", "ema.t_embedder.W", "model.t_embedder.W"]
        .iter()
        .any(|n| names.iter().any(|m| m == n));
    if !has {
        return Err(CliError::new(format!(
            "{} is not a DiT-DH checkpoint: it has no t_embedder.W (its {} tensors include {})",
            path.display(),
            names.len(),
            names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(file)
}

/// For the built-in dataset: draws 10 samples per class and logs how many are recognisably
/// of their class, by two independent checks (the nearest class colour of the foreground,
/// and the class of the nearest training image in pixel space).
fn report_class_accuracy<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    model: &DitDh<B>,
    s: &SampleSettings,
    out: &Path,
    step: u64,
) -> CliResult<(f64, f64)> {
    let per = 10;
    let labels: Vec<u32> = (0..10u32)
        .flat_map(|c| std::iter::repeat_n(c, per))
        .collect();
    let mut s = s.clone();
    s.seed = s.seed.wrapping_add(0xACC);
    let noise = initial_noise(b, model, labels.len(), s.seed)?;
    let z = generate(b, model, None, &labels, noise, &s)?;
    let imgs: Vec<Vec<f32>> = decode_images(b, rae, &z)?
        .iter()
        .map(|i| crate::image_io::to_chw(i, false))
        .collect();
    let size = rae.decoder.config.image_size;
    let (colour, nn) = crate::data::builtin_class_accuracy(&imgs, &labels, size)?;
    log_line(
        out,
        &format!(
            "step {step}: samples recognisably of their class: {:.0}% by foreground colour, {:.0}% by nearest training image ({} samples)",
            100.0 * colour,
            100.0 * nn,
            labels.len()
        ),
    );
    Ok((colour, nn))
}

/// The bookkeeping both training stages share: the progress bar, throughput, the mean loss
/// over each log interval, and when a checkpoint is due.
struct StageProgress<'a> {
    pb: indicatif::ProgressBar,
    tp: Throughput,
    window: LossWindow,
    stage: &'static str,
    loss_name: &'static str,
    steps: u64,
    /// Where this invocation stops (`--stop-at`, at most `steps`).
    stop: u64,
    log_every: u64,
    ckpt_every: u64,
    out: &'a Path,
}

impl<'a> StageProgress<'a> {
    fn new(
        a: &TrainArgs,
        out: &'a Path,
        stage: &'static str,
        loss_name: &'static str,
        steps: u64,
        start: u64,
    ) -> Self {
        let pb = bar(steps, stage);
        pb.set_position(start);
        StageProgress {
            pb,
            tp: Throughput::default(),
            window: LossWindow::default(),
            stage,
            loss_name,
            steps,
            stop: a.stop_at.unwrap_or(steps).min(steps),
            log_every: a.log_every.max(1),
            ckpt_every: a.ckpt_every.max(1),
            out,
        }
    }

    /// Records the finished step `done` (a batch of `batch` items): updates the bar, writes a
    /// log line at each interval; returns whether a checkpoint is due.
    fn record(&mut self, done: u64, batch: usize, loss: f32, rep: &StepReport) -> bool {
        self.tp.add(batch as u64);
        self.pb.set_position(done);
        self.pb.set_message(format!(
            "{} {loss:.4} lr {:.2e} {:.1} img/s",
            self.loss_name,
            rep.lr,
            self.tp.rate()
        ));
        self.window.push(loss);
        if done % self.log_every == 0 || done == self.steps {
            let line = format!(
                "{} step {done}/{} {} {:.5} lr {:.3e} grad-norm {:.3} {:.1} img/s",
                self.stage,
                self.steps,
                self.loss_name,
                self.window.take(),
                rep.lr,
                rep.grad_norm,
                self.tp.rate()
            );
            self.pb.suspend(|| log_line(self.out, &line));
        }
        done % self.ckpt_every == 0 || done == self.stop
    }
}

/// Mean of the losses since the last log line (single-batch losses are noisy).
#[derive(Debug, Default)]
struct LossWindow {
    sum: f64,
    n: usize,
}

impl LossWindow {
    fn push(&mut self, loss: f32) {
        self.sum += loss as f64;
        self.n += 1;
    }

    fn take(&mut self) -> f64 {
        let m = self.sum / self.n.max(1) as f64;
        *self = LossWindow::default();
        m
    }
}
