//! Stage 2 from the command line: a [`Stage2Trainer`] for a DiT-DH on the latents of a
//! RAE (encoded on the fly or read from a cache), driven by the core training loop, with
//! preview grids and the built-in data's class check along the way.

use std::path::Path;

use rae_core::models::{DitDh, Rae};
use rae_core::nn::Init;
use rae_core::train::{Optimizer, RngState, RunState, Stage2Trainer};
use rae_core::Backend;

use super::progress::{log_line, CliHooks, StageProgress};
use crate::commands::generate::{decode_images, generate, initial_noise, SampleSettings};
use crate::config::{Stage2Data, TrainRun};
use crate::data::loader::{with_loader, Images, ItemSource, DEFAULT_AHEAD};
use crate::data::{BatchOrder, Dataset};
use crate::errors::{CliError, CliResult};
use crate::image_io::{grid, save_png};
use crate::presets;
use crate::store::{read_train_checkpoint, LatentCache, ShardSet};

/// Where stage-2 latents come from.
#[allow(missing_debug_implementations)]
pub enum LatentSource {
    /// Images encoded on the fly by the frozen encoder.
    Images(Box<dyn Dataset>),
    /// A latent cache written by `encode`, in memory.
    Cache(LatentCache),
    /// A sharded latent cache written by `encode --out DIR`, memory-mapped.
    Shards(ShardSet),
}

/// What stage 2's settings depend on in its data, checked against the RAE.
fn stage2_data<B: Backend>(rae: &Rae<B>, source: &LatentSource) -> CliResult<Stage2Data> {
    let latent = rae.latent_dims();
    let (items, classes) = match source {
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
        LatentSource::Shards(s) => {
            if s.dims() != latent {
                return Err(CliError::new(format!(
                    "the latent cache holds {:?} latents but the RAE makes {:?}",
                    s.dims(),
                    latent
                )));
            }
            (s.len(), s.classes())
        }
    };
    Ok(Stage2Data {
        latent,
        items,
        classes,
        images: matches!(source, LatentSource::Images(_)),
    })
}

/// Stage 2: settles the stage for `source`, trains a DiT-DH on the RAE's latents, and writes
/// preview grids and a final grid; returns the EMA model.
pub fn train_dit<B: Backend>(
    b: &B,
    train: &TrainRun,
    rae: &Rae<B>,
    source: LatentSource,
) -> CliResult<DitDh<B>> {
    let run = train.stage2(stage2_data(rae, &source)?)?;
    let (bs, steps, files) = (run.batch_size, run.steps, &run.files);
    let (latent, classes, out) = (run.data.latent, run.data.classes, files.out.as_path());
    let model = DitDh::new(b, &mut Init::new(run.seed ^ 0xD17), run.model.clone())?;
    let resume = if files.resume {
        Some(read_train_checkpoint(&files.ckpt)?)
    } else {
        None
    };
    crate::say!("{run}");
    let mut trainer = Stage2Trainer {
        state: RunState {
            opt: Optimizer::new(b, &model, run.optimizer.clone())?,
            rng: RngState::new(run.seed),
            metadata: run.to_metadata()?,
        },
        model,
        config: run.flow.clone(),
    };
    let start = resume
        .as_ref()
        .and_then(|ck| ck.meta("step")?.parse::<u64>().ok())
        .unwrap_or(0);
    if resume.is_some() {
        crate::say!("stage 2: resuming {} at step {start}", files.ckpt.display());
    }
    crate::say!(
        "stage 2: DiT-DH {} params, latents {:?}, shift {:.3}, batch {bs}, {steps} steps, lr {:.1e}",
        presets::count(&trainer.model),
        latent,
        run.flow.shift,
        run.optimizer.schedule.base_lr
    );
    let mut order = BatchOrder::new(run.seed, run.data.items, run.data.images);
    let mine = run.flow.shard.range(bs)?;
    let mut coll = crate::dist::collective(b)?;
    let lead = crate::dist::is_lead();
    let prog = StageProgress::new(files, "stage 2", "loss", steps, start);
    let (preview, is_builtin) = (&run.preview, run.builtin);
    let stop = files.stop;
    let sample_every = run.sample_every;
    // Batches come from a loader (threads ahead of the step, same batches as a sequential
    // load): images to encode, or latents from a cache.
    let images;
    let (items, workers, side): (&dyn ItemSource, usize, Option<usize>) = match &source {
        LatentSource::Images(ds) => {
            images = Images(ds.as_ref());
            (&images, train.data.workers, Some(ds.image_size()))
        }
        LatentSource::Cache(c) => (c, 0, None),
        LatentSource::Shards(s) => (s, train.data.workers, None),
    };
    // This process's share of the global batch of each step.
    let plan = move |step| order.batch(step, bs)[mine.clone()].to_vec();
    let pb = with_loader(items, workers, DEFAULT_AHEAD, stop, plan, |loader| {
        let mut hooks = CliHooks::<B, Stage2Trainer<B>> {
            prog,
            ckpt: &files.ckpt,
            batch_size: bs,
            batch: Box::new(|b: &B, step| {
                let (v, labels) = loader.batch(step)?;
                let n = labels.len();
                match side {
                    Some(s) => {
                        let x = b.upload(&v, &[n, 3, s, s])?;
                        Ok((rae.encode(b, &x)?, labels))
                    }
                    None => Ok((b.upload(&v, &[n, latent[0], latent[1], latent[2]])?, labels)),
                }
            }),
            after: Box::new(|b: &B, t: &Stage2Trainer<B>, done, prog| {
                if lead && sample_every > 0 && done % sample_every == 0 && done != steps {
                    let ema = t.state.opt.ema_model(&t.model)?;
                    let path = out.join("samples").join(format!("step-{done:06}.png"));
                    prog.pb
                        .suspend(|| preview_grid(b, rae, &ema, classes, 1, preview, &path))?;
                    if is_builtin {
                        report_class_accuracy(b, rae, &ema, preview, out, done)?;
                    }
                }
                Ok(())
            }),
        };
        let source_name = files.ckpt.display().to_string();
        rae_core::train::run(
            b,
            &mut trainer,
            &mut hooks,
            coll.as_mut(),
            resume.as_ref().map(|ck| (ck, source_name.as_str())),
            stop,
        )?;
        CliResult::Ok(hooks.prog.pb)
    })?;
    let (model, opt) = (&trainer.model, &trainer.state.opt);
    pb.finish_and_clear();
    if stop < steps {
        crate::say!(
            "stage 2: stopped at step {stop} of {steps} (--stop-at); continue with --resume"
        );
        return Ok(opt.ema_model(model)?);
    }
    let ema = opt.ema_model(model)?;
    if !lead {
        return Ok(ema);
    }
    let path = out.join("samples").join("final.png");
    preview_grid(b, rae, &ema, classes, 4, preview, &path)?;
    if is_builtin {
        report_class_accuracy(b, rae, &ema, preview, out, steps)?;
    }
    crate::say!(
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
