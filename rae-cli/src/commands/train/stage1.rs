//! Stage 1 from the command line: a [`Stage1Trainer`] for the decoder of a frozen encoder,
//! fed with image batches and driven by the core training loop.

use std::path::Path;

use rae_core::json::JsonValue;
use rae_core::models::{Encoder, RaeDecoder};
use rae_core::nn::Init;
use rae_core::train::{NoReduce, Optimizer, RngState, RunState, Stage1Config, Stage1Trainer};
use rae_core::Backend;

use super::progress::{CliHooks, StageProgress};
use super::settings::{noise_rule, opt_config, read_checkpoint, resume_decision, schedule_json};
use crate::cli::TrainArgs;
use crate::data::{load_batch, BatchOrder, Dataset};
use crate::errors::{CliError, CliResult};
use crate::presets;
use crate::store::save_decoder;

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
    let rae = presets::assemble_rae(encoder, decoder, None, None)?;
    let spe = (ds.len() / bs).max(1) as u64;
    // [config hook] training.epochs of a reference YAML, unless --max-steps.
    let steps = a
        .plan
        .as_ref()
        .and_then(|p| p.total_steps(a.max_steps, spe))
        .unwrap_or(steps);
    let ocfg = opt_config(a, steps, tiny, 1, spe)?;
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
    let metadata = vec![
        ("format".to_string(), "rae-train".to_string()),
        ("kind".into(), "decoder".into()),
        ("config".into(), meta_cfg),
    ];
    let resume = if resume_decision(a, &ckpt, a.stage.is_none())? {
        Some(read_checkpoint(&ckpt)?)
    } else {
        None
    };
    let mut trainer = Stage1Trainer {
        state: RunState {
            opt: Optimizer::new(b, &rae.decoder, ocfg.clone())?,
            rng: RngState::new(a.seed),
            metadata,
        },
        rae,
        config: s1,
    };
    let start = resume
        .as_ref()
        .and_then(|ck| ck.meta("step")?.parse::<u64>().ok())
        .unwrap_or(0);
    if resume.is_some() {
        eprintln!("stage 1: resuming {} at step {start}", ckpt.display());
    }
    eprintln!(
        "stage 1: decoder {} params, batch {bs}, {steps} steps, lr {:.1e}, noise τ {}",
        presets::count(&trainer.rae.decoder),
        ocfg.schedule.base_lr,
        s1.noise_tau
    );
    let mut order = BatchOrder::new(a.seed, ds.len(), false);
    let s = ds.image_size();
    let prog = StageProgress::new(a, out, "stage 1", "L1", steps, start);
    let stop = prog.stop;
    let mut hooks = CliHooks::<B, Stage1Trainer<B>> {
        prog,
        ckpt: &ckpt,
        batch_size: bs,
        batch: Box::new(|b: &B, step| {
            let (imgs, _) = load_batch(ds, &order.batch(step, bs))?;
            Ok(b.upload(&imgs, &[bs, 3, s, s])?)
        }),
        after: Box::new(|_, _, _, _| Ok(())),
    };
    let source = ckpt.display().to_string();
    rae_core::train::run(
        b,
        &mut trainer,
        &mut hooks,
        &mut NoReduce,
        resume.as_ref().map(|ck| (ck, source.as_str())),
        stop,
    )?;
    hooks.prog.pb.finish_and_clear();
    if stop < steps {
        return Err(CliError::new(format!(
            "stage 1 stopped at step {stop} of {steps} (--stop-at); continue with --resume"
        )));
    }
    let ema = trainer.state.opt.ema_model(&trainer.rae.decoder);
    save_decoder(b, &ema, final_path)?;
    eprintln!("stage 1: decoder (EMA) -> {}", final_path.display());
    Ok(ema)
}
