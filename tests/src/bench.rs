//! Shared pieces of the benches (`benches/dit_forward.rs`, `benches/gpu_check.rs`): timing
//! and one timed stage-2 training step.

use std::time::Instant;

use rae_core::flow::{shift_factor, TimeDist};
use rae_core::models::{DitConfig, DitDh};
use rae_core::nn::Init;
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::train::{stage2_step, Optimizer, OptimizerConfig, RngState, Stage2Config};
use rae_core::{Backend, PhiloxKey, Result};

/// Median seconds of `iters` timed calls of `f` after one untimed call (compilation,
/// autotuning, memory pool growth), each ending in [`Backend::sync`].
pub fn median_secs<B: Backend>(
    b: &B,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    f()?;
    b.sync()?;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        b.sync()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The optimiser of a timed step: AdamW, a linear decay from `lr.0` to `lr.1` over 1000
/// steps after a constant warm-up of 50, clipping at 1, EMA `ema`.
pub fn optimizer_config(lr: (f64, f64), ema: f32) -> OptimizerConfig {
    OptimizerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule {
            base_lr: lr.0,
            final_lr: lr.1,
            warmup_steps: 50,
            decay_end_step: 1000,
            warmup: Warmup::Constant,
            decay: Decay::Linear,
        },
        clip: Some(1.0),
        ema_decay: ema,
    }
}

/// Median seconds of one stage-2 step (§4.1–§4.3, §5.1: forward, MSE, backward, clipping,
/// AdamW, EMA) of a DiT-DH of config `cfg` with random weights on `batch` random latents.
pub fn stage2_step_secs<B: Backend>(
    b: &B,
    cfg: &DitConfig,
    batch: usize,
    iters: usize,
    opt: OptimizerConfig,
) -> Result<f64> {
    let (c, g) = (cfg.in_channels, cfg.input_size);
    let mut m = DitDh::new(b, &mut Init::new(0xD17), cfg.clone())?;
    let mut opt = Optimizer::new(b, &m, opt)?;
    let mut rng = RngState::new(0);
    let s2 = Stage2Config {
        time_dist: TimeDist::parse("logit-normal_0_1")?,
        shift: shift_factor(c * g * g, 4096)?,
        label_dropout: cfg.class_dropout_prob,
        shard: Default::default(),
    };
    let z = b.fill_normal(&[batch, c, g, g], PhiloxKey::new(2, 2), 0)?;
    let labels: Vec<u32> = (0..batch)
        .map(|i| (i * 37 % cfg.num_classes) as u32)
        .collect();
    median_secs(b, iters, || {
        stage2_step(b, &mut m, &mut opt, &mut rng, &s2, &z, &labels).map(drop)
    })
}
