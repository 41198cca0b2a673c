//! Where the CPU backend spends its time, op by op (see `rae_core::cpu::profile`), in
//!
//! 1. one DiT-DH-S (§3.9) stage-2 training step (§4–§5.1: forward, MSE, backward, clipping
//!    at 1, AdamW, EMA) on 16×16×768 random latents, batch 4;
//! 2. one DINOv2-B/14 with 4 registers (§2.2) forward of random 224² images, batch 4.
//!
//! Random weights. Each workload runs once untimed (warm-up), then `RAE_PROFILE_ITERS`
//! (default 1) profiled runs; the table sums them.
//!
//! ```text
//! cargo run --release -p rae-core --example profile_ops
//! ```
//!
//! Profiling is switched on here after the warm-up whatever `RAE_CPU_PROFILE` says.

#[cfg(feature = "std")]
fn main() -> rae_core::Result<()> {
    profiling::main()
}

#[cfg(not(feature = "std"))]
fn main() {
    eprintln!("profile_ops needs rae-core's `std` feature");
}

#[cfg(feature = "std")]
mod profiling {
    use std::time::{Duration, Instant};

    use rae_core::cpu::{par, profile};
    use rae_core::flow::{shift_factor, TimeDist};
    use rae_core::models::{Dinov2Config, Dinov2Encoder, DitConfig, DitDh, Mode};
    use rae_core::nn::Init;
    use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
    use rae_core::train::{stage2_step, Optimizer, OptimizerConfig, RngState, Stage2Config};
    use rae_core::{Backend, CpuBackend, PhiloxKey, Result};

    /// Batch of both workloads.
    const BATCH: usize = 4;

    pub fn main() -> Result<()> {
        let iters = std::env::var("RAE_PROFILE_ITERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let b = CpuBackend::new();
        println!(
            "CpuBackend, {} threads, {} profiled run(s) after one warm-up\n",
            par::threads(),
            iters
        );
        let mut step = dit_step(&b)?;
        profiled(
            "DiT-DH-S stage-2 training step, 16×16×768 latents, batch 4",
            iters,
            &mut step,
        )?;
        drop(step);
        let mut fwd = dinov2_forward(&b)?;
        profiled("DINOv2-B/14-reg forward, 224², batch 4", iters, &mut fwd)?;
        Ok(())
    }

    /// Warms `run` up, then profiles `iters` runs of it and prints the table.
    fn profiled(what: &str, iters: usize, run: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let t = Instant::now();
        run()?;
        let warm = t.elapsed();
        profile::force(true);
        profile::reset();
        let mut wall = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            run()?;
            wall += t.elapsed();
        }
        profile::force(false);
        let ops: Duration = profile::snapshot().iter().map(|r| r.total).sum();
        let per = |d: Duration| d.as_secs_f64() * 1e3 / iters as f64;
        println!("== {what}");
        println!(
            "warm-up {:.1} ms; profiled {:.1} ms per run, of which {:.1} ms inside backend ops \
             ({:.1} ms outside); {:.1} GFLOP of matrix products per run\n",
            warm.as_secs_f64() * 1e3,
            per(wall),
            per(ops),
            per(wall.saturating_sub(ops)),
            profile::matmul_flops() / iters as f64 / 1e9,
        );
        println!("{}", profile::report());
        Ok(())
    }

    /// One stage-2 step of DiT-DH-S with AdamW (lr 2e-4), clipping at 1 and EMA 0.9999.
    fn dit_step(b: &CpuBackend) -> Result<impl FnMut() -> Result<()> + '_> {
        let cfg = DitConfig::dh_s();
        let (c, g) = (cfg.in_channels, cfg.input_size);
        let mut model = DitDh::new(b, &mut Init::new(0), cfg.clone())?;
        let schedule = LrSchedule {
            base_lr: 2e-4,
            final_lr: 2e-4,
            warmup_steps: 0,
            decay_end_step: 1,
            warmup: Warmup::Constant,
            decay: Decay::Linear,
        };
        let opt_cfg = OptimizerConfig {
            adamw: AdamWConfig::default(),
            schedule,
            clip: Some(1.0),
            ema_decay: 0.9999,
        };
        let mut opt = Optimizer::new(b, &model, opt_cfg)?;
        let mut rng = RngState::new(1);
        let s2 = Stage2Config {
            time_dist: TimeDist::parse("logit-normal_0_1")?,
            shift: shift_factor(c * g * g, 4096)?,
            label_dropout: cfg.class_dropout_prob,
            shard: Default::default(),
        };
        let z = b.fill_normal(&[BATCH, c, g, g], PhiloxKey::new(7, 1), 0)?;
        let labels: Vec<u32> = (0..BATCH)
            .map(|i| ((i * 101) % cfg.num_classes) as u32)
            .collect();
        Ok(move || stage2_step(b, &mut model, &mut opt, &mut rng, &s2, &z, &labels).map(drop))
    }

    /// A DINOv2-B/14-reg eval forward (position table interpolated to the 16×16 grid).
    fn dinov2_forward(b: &CpuBackend) -> Result<impl FnMut() -> Result<()> + '_> {
        let enc = Dinov2Encoder::new(b, &mut Init::new(5), Dinov2Config::base())?;
        let x = b.fill_normal(&[BATCH, 3, 224, 224], PhiloxKey::new(7, 2), 0)?;
        Ok(move || enc.forward(b, &x, Mode::Infer).map(drop))
    }
}
