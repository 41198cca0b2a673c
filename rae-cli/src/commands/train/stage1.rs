//! Stage 1 from the command line: a [`Stage1Trainer`] for the decoder of a frozen encoder,
//! fed with image batches and driven by the core training loop.

use rae_core::models::{Encoder, RaeDecoder};
use rae_core::nn::Init;
use rae_core::train::{Optimizer, RngState, RunState, Stage1Trainer};
use rae_core::Backend;

use super::progress::{CliHooks, StageProgress};
use crate::config::Stage1Run;
use crate::data::loader::{with_loader, Images, DEFAULT_AHEAD};
use crate::data::{BatchOrder, Dataset};
use crate::errors::{CliError, CliResult};
use crate::presets;
use crate::store::{read_train_checkpoint, save_decoder};

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
    let (bs, steps, files) = (run.batch_size, run.steps, &run.files);
    let decoder = RaeDecoder::new(b, &mut Init::new(run.seed ^ 0xDEC0), run.decoder.clone())?;
    let rae = presets::assemble_rae(encoder, decoder, None, None)?;
    let resume = if files.resume {
        Some(read_train_checkpoint(&files.ckpt)?)
    } else {
        None
    };
    crate::say!("{run}");
    let mut trainer = Stage1Trainer {
        state: RunState {
            opt: Optimizer::new(b, &rae.decoder, run.optimizer.clone())?,
            rng: RngState::new(run.seed),
            metadata: run.to_metadata()?,
        },
        rae,
        config: run.noise,
    };
    let start = resume
        .as_ref()
        .and_then(|ck| ck.meta("step")?.parse::<u64>().ok())
        .unwrap_or(0);
    if resume.is_some() {
        crate::say!("stage 1: resuming {} at step {start}", files.ckpt.display());
    }
    crate::say!(
        "stage 1: decoder {} params, batch {bs}, {steps} steps, lr {:.1e}, noise τ {}",
        presets::count(&trainer.rae.decoder),
        run.optimizer.schedule.base_lr,
        run.noise.noise_tau
    );
    let mut order = BatchOrder::new(run.seed, ds.len(), false);
    let mine = run.noise.shard.range(bs)?;
    let mut coll = crate::dist::collective(b)?;
    let s = ds.image_size();
    let prog = StageProgress::new(files, "stage 1", "L1", steps, start);
    let stop = files.stop;
    // This process's share of the global batch of each step.
    let plan = move |step| order.batch(step, bs)[mine.clone()].to_vec();
    let images = Images(ds);
    let pb = with_loader(&images, workers, DEFAULT_AHEAD, stop, plan, |loader| {
        let mut hooks = CliHooks::<B, Stage1Trainer<B>> {
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
            &mut trainer,
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
    let ema = trainer.state.opt.ema_model(&trainer.rae.decoder)?;
    if crate::dist::is_lead() {
        save_decoder(b, &ema, &run.final_path)?;
        crate::say!("stage 1: decoder (EMA) -> {}", run.final_path.display());
    }
    Ok(ema)
}
