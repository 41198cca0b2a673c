//! Stage 1 from the command line: a [`Stage1Trainer`] (L1) or a [`Stage1GanTrainer`] (L1 +
//! LPIPS + GAN, §2.7) for the decoder of a frozen encoder, fed with image batches and driven
//! by the core training loop.

use rae_core::models::{Encoder, Rae, RaeDecoder};
use rae_core::nn::{Init, ParamKind};
use rae_core::train::{
    DiscState, Optimizer, RngState, RunState, Stage1GanTrainer, Stage1Trainer, Trainer,
};
use rae_core::{Backend, Tensor};

use super::progress::{CliHooks, StageProgress};
use crate::config::Stage1Run;
use crate::data::loader::{with_loader, Images, DEFAULT_AHEAD};
use crate::data::{BatchOrder, Dataset};
use crate::errors::{CliError, CliResult};
use crate::presets;
use crate::store::{load_discriminator, load_lpips, read_train_checkpoint, save_decoder};

/// Stage 1: trains a decoder for `encoder` as `run` settles it; writes the EMA decoder to
/// `run.final_path` and returns it. `workers` threads decode the images ahead of the step
/// (0: on the training thread).
pub fn train_decoder<B: Backend>(
    b: &B,
    run: &Stage1Run,
    encoder: Encoder<B>,
    ds: &dyn Dataset,
    workers: usize,
) -> CliResult<RaeDecoder<B>> {
    let mut decoder = RaeDecoder::new(b, &mut Init::new(run.seed ^ 0xDEC0), run.decoder.clone())?;
    // The reference trains every decoder parameter in stage 1, the sin-cos position table
    // included (`rae.decoder.requires_grad_(True)` in src/train_stage1.py, §2.7.7).
    decoder.pos.kind = ParamKind::Trainable;
    let rae = presets::assemble_rae(encoder, decoder, None, None)?;
    crate::say!("{run}");
    crate::say!(
        "stage 1: decoder {} params, batch {}, {} steps, lr {:.1e}, noise τ {}",
        presets::count(&rae.decoder),
        run.batch_size,
        run.steps,
        run.optimizer.schedule.base_lr,
        run.noise.noise_tau
    );
    let state = RunState {
        opt: Optimizer::new(b, &rae.decoder, run.optimizer.clone())?,
        rng: RngState::new(run.seed),
        metadata: run.to_metadata()?,
    };
    let Some(gan) = &run.gan else {
        let mut t = Stage1Trainer {
            state,
            rae,
            config: run.noise,
        };
        drive(b, run, &mut t, ds, workers, "L1")?;
        return finish(b, run, &t.state.opt, &t.rae);
    };
    let lpips = match &gan.lpips {
        Some((vgg, lin)) => Some(load_lpips(b, vgg, lin)?),
        None => None,
    };
    let disc = match &gan.disc {
        Some((path, cfg)) => {
            let disc = load_discriminator(b, path, cfg.clone(), run.seed)?;
            // The heads train with the decoder's optimiser settings and schedule, unclipped
            // (the released config); the schedule advances only on updates.
            let mut oc = run.optimizer.clone();
            oc.clip = None;
            let opt = Optimizer::new(b, &disc, oc)?;
            Some(DiscState { disc, opt })
        }
        None => None,
    };
    let mut t = Stage1GanTrainer {
        state,
        rae,
        config: run.noise,
        gan: gan.config,
        lpips,
        disc,
    };
    drive(b, run, &mut t, ds, workers, "loss")?;
    finish(b, run, &t.state.opt, &t.rae)
}

/// The training loop of either trainer: resume, batches from the loader, progress and
/// checkpoints.
fn drive<B: Backend, T: Trainer<B, Batch = Tensor<B>>>(
    b: &B,
    run: &Stage1Run,
    trainer: &mut T,
    ds: &dyn Dataset,
    workers: usize,
    loss_name: &'static str,
) -> CliResult<()> {
    let (bs, steps, files) = (run.batch_size, run.steps, &run.files);
    let resume = if files.resume {
        Some(read_train_checkpoint(&files.ckpt)?)
    } else {
        None
    };
    let start = resume
        .as_ref()
        .and_then(|ck| ck.meta("step")?.parse::<u64>().ok())
        .unwrap_or(0);
    if resume.is_some() {
        crate::say!("stage 1: resuming {} at step {start}", files.ckpt.display());
    }
    let mut order = BatchOrder::new(run.seed, ds.len(), false);
    let mine = run.noise.shard.range(bs)?;
    let mut coll = crate::dist::collective(b)?;
    let s = ds.image_size();
    let prog = StageProgress::new(files, "stage 1", loss_name, steps, start);
    let stop = files.stop;
    // This process's share of the global batch of each step.
    let plan = move |step| order.batch(step, bs)[mine.clone()].to_vec();
    let images = Images(ds);
    let pb = with_loader(&images, workers, DEFAULT_AHEAD, stop, plan, |loader| {
        let mut hooks = CliHooks::<B, T> {
            prog,
            ckpt: &files.ckpt,
            batch_size: bs,
            batch: Box::new(|b: &B, step| {
                let (imgs, labels) = loader.batch(step)?;
                Ok(b.upload(&imgs, &[labels.len(), 3, s, s])?)
            }),
            after: Box::new(|_, _, _, _| Ok(())),
        };
        let source = files.ckpt.display().to_string();
        rae_core::train::run(
            b,
            trainer,
            &mut hooks,
            coll.as_mut(),
            resume.as_ref().map(|ck| (ck, source.as_str())),
            stop,
        )?;
        CliResult::Ok(hooks.prog.pb)
    })?;
    pb.finish_and_clear();
    if stop < steps {
        return Err(CliError::new(format!(
            "stage 1 stopped at step {stop} of {steps} (--stop-at); continue with --resume"
        )));
    }
    Ok(())
}

/// Writes the decoder's EMA weights (process 0) and returns them.
fn finish<B: Backend>(
    b: &B,
    run: &Stage1Run,
    opt: &Optimizer<B>,
    rae: &Rae<B>,
) -> CliResult<RaeDecoder<B>> {
    let ema = opt.ema_model(&rae.decoder)?;
    if crate::dist::is_lead() {
        save_decoder(b, &ema, &run.final_path)?;
        crate::say!("stage 1: decoder (EMA) -> {}", run.final_path.display());
    }
    Ok(ema)
}
