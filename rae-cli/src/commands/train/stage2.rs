//! Stage 2 from the command line: a [`Stage2Trainer`] for a DiT-DH on the latents of a
//! RAE (encoded on the fly or read from a cache), driven by the core training loop, with
//! preview grids and the built-in data's class check along the way.

use std::path::Path;

use rae_core::flow::TimeDist;
use rae_core::json::JsonValue;
use rae_core::models::{DitDh, Rae};
use rae_core::nn::Init;
use rae_core::train::{NoReduce, Optimizer, RngState, RunState, Stage2Config, Stage2Trainer};
use rae_core::Backend;

use super::progress::{log_line, CliHooks, StageProgress};
use super::settings::{opt_config, read_checkpoint, resume_decision, schedule_json};
use super::{TINY_SAMPLE_CFG, TINY_SHIFT_BASE, TINY_STAGE2_BATCH};
use crate::cli::TrainArgs;
use crate::commands::generate::{generate, initial_noise, SampleSettings};
use crate::data::{load_batch, BatchOrder, Dataset};
use crate::errors::{CliError, CliResult};
use crate::files::load_tensor_file;
use crate::image_io::{grid, save_png};
use crate::presets;
use crate::store::decode_images;

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
    let classes = match f.meta("num_classes") {
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&k| (1..=rae_core::limits::MAX_CLASSES).contains(&k))
            .ok_or_else(|| {
                CliError::new(format!(
                    "{}: metadata num_classes = {s:?} is not a class count",
                    path.display()
                ))
            })?,
        None => labels.iter().max().map_or(1, |m| *m as usize + 1),
    };
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(CliError::new(format!(
            "{}: label {bad} is outside the {classes} classes its metadata names",
            path.display()
        )));
    }
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
    let model = DitDh::new(b, &mut Init::new(a.seed ^ 0xD17), cfg.clone())?;
    let spe = (n_items / bs).max(1) as u64;
    // [config hook] training.epochs of a reference YAML, unless --max-steps.
    let steps = a
        .plan
        .as_ref()
        .and_then(|p| p.total_steps(a.max_steps, spe))
        .unwrap_or(steps);
    let ocfg = opt_config(a, steps, tiny, 2, spe)?;
    let resume = if resume_decision(a, &ckpt, a.stage.is_none() && !a.rae.given())? {
        Some(read_checkpoint(&ckpt)?)
    } else {
        None
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
    let shift = crate::commands::generate::shift_for(dim, shift_base)?;
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
    let metadata = vec![
        ("format".to_string(), "rae-train".to_string()),
        ("kind".into(), "dit".into()),
        ("config".into(), meta_cfg),
    ];
    let mut trainer = Stage2Trainer {
        state: RunState {
            opt: Optimizer::new(b, &model, ocfg.clone())?,
            rng: RngState::new(a.seed),
            metadata,
        },
        model,
        config: s2,
    };
    let start = resume
        .as_ref()
        .and_then(|ck| ck.meta("step")?.parse::<u64>().ok())
        .unwrap_or(0);
    if resume.is_some() {
        eprintln!("stage 2: resuming {} at step {start}", ckpt.display());
    }
    eprintln!(
        "stage 2: DiT-DH {} params, latents {:?}, shift {:.3}, batch {bs}, {steps} steps, lr {:.1e}",
        presets::count(&trainer.model),
        latent,
        shift,
        ocfg.schedule.base_lr
    );
    let images = matches!(source, LatentSource::Images(_));
    let mut order = BatchOrder::new(a.seed, n_items, images);
    let prog = StageProgress::new(a, out, "stage 2", "loss", steps, start);
    let preview = SampleSettings {
        steps: a.sample_steps,
        guidance_scale: sample_cfg,
        shift_base,
        ..SampleSettings::default()
    };
    let stop = prog.stop;
    let sample_every = a.sample_every;
    let mut hooks = CliHooks::<B, Stage2Trainer<B>> {
        prog,
        ckpt: &ckpt,
        batch_size: bs,
        batch: Box::new(|b: &B, step| {
            let items = order.batch(step, bs);
            match &source {
                LatentSource::Images(ds) => {
                    let (imgs, labels) = load_batch(ds.as_ref(), &items)?;
                    let s = ds.image_size();
                    let x = b.upload(&imgs, &[bs, 3, s, s])?;
                    Ok((rae.encode(b, &x)?, labels))
                }
                LatentSource::Cache(c) => {
                    let mut v = Vec::with_capacity(bs * dim);
                    let mut l = Vec::with_capacity(bs);
                    for (i, _) in &items {
                        v.extend_from_slice(&c.latents[i * dim..(i + 1) * dim]);
                        l.push(c.labels[*i]);
                    }
                    Ok((b.upload(&v, &[bs, latent[0], latent[1], latent[2]])?, l))
                }
            }
        }),
        after: Box::new(|b: &B, t: &Stage2Trainer<B>, done, prog| {
            if sample_every > 0 && done % sample_every == 0 && done != steps {
                let ema = t.state.opt.ema_model(&t.model);
                let path = out.join("samples").join(format!("step-{done:06}.png"));
                prog.pb
                    .suspend(|| preview_grid(b, rae, &ema, classes, 1, &preview, &path))?;
                if is_builtin {
                    report_class_accuracy(b, rae, &ema, &preview, out, done)?;
                }
            }
            Ok(())
        }),
    };
    let source_name = ckpt.display().to_string();
    rae_core::train::run(
        b,
        &mut trainer,
        &mut hooks,
        &mut NoReduce,
        resume.as_ref().map(|ck| (ck, source_name.as_str())),
        stop,
    )?;
    let (prog, model, opt) = (hooks.prog, &trainer.model, &trainer.state.opt);
    prog.pb.finish_and_clear();
    if stop < steps {
        eprintln!("stage 2: stopped at step {stop} of {steps} (--stop-at); continue with --resume");
        return Ok(opt.ema_model(model));
    }
    let ema = opt.ema_model(model);
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
