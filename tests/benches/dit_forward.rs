//! Model throughput on every backend present (CPU, WGPU, CUDA):
//!
//! - DiT-DH-S (§3.9: backbone 384 × 12, head 2048 × 2) eval forward on 16×16×768 latents
//!   with random weights, in images per second;
//! - one stage-2 training step (§4.1–§4.3, §5.1: forward, MSE, backward, clipping, AdamW,
//!   EMA) of the built-in tiny DiT-DH (8×8×32 latents, backbone 64 × 2, head 128 × 1, 10
//!   classes, batch 32; the numbers of `rae-cli`'s `tiny` preset), in milliseconds.
//!
//! Each measurement runs once untimed (kernel compilation, memory pool), then times whole
//! iterations, each ending in [`Backend::sync`]. Lavapipe (WGPU on the CPU) is expected to
//! be slow: it gets a smaller batch and fewer iterations.
//!
//! `XDG_RUNTIME_DIR=/tmp cargo bench -p rae-tests --bench dit_forward`

use rae_backend_wgpu::{AdapterKind, WgpuOptions};
use rae_core::models::{DitConfig, DitDh, Mode};
use rae_core::nn::Init;
use rae_core::train::trainable_params;
use rae_core::{Backend, CpuBackend, PhiloxKey, Result};
use rae_tests::bench::{median_secs, optimizer_config, stage2_step_secs};

/// How much work a backend gets.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// DiT-DH-S forward batch.
    batch: usize,
    /// Timed DiT-DH-S forwards.
    fwd_iters: usize,
    /// Timed tiny training steps.
    step_iters: usize,
}

/// Lavapipe: a DiT-DH-S forward takes tens of seconds per image there.
const SLOW: Plan = Plan {
    batch: 2,
    fwd_iters: 1,
    step_iters: 5,
};
/// The CPU backend: seconds per DiT-DH-S image on two cores.
const CPU: Plan = Plan {
    batch: 8,
    fwd_iters: 3,
    step_iters: 10,
};
/// A real GPU (WGPU or CUDA).
const GPU: Plan = Plan {
    batch: 8,
    fwd_iters: 20,
    step_iters: 50,
};

/// The tiny DiT-DH of `rae-cli`'s built-in default (`presets::tiny_dit`), on the tiny
/// encoder's 8×8×32 latents with the built-in dataset's 10 classes.
fn tiny_dit() -> DitConfig {
    DitConfig {
        input_size: 8,
        patch_size: 1,
        in_channels: 32,
        hidden_enc: 64,
        hidden_dec: 128,
        depth_enc: 2,
        depth_dec: 1,
        heads_enc: 4,
        heads_dec: 4,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: 10,
        use_pos_embed: true,
    }
}

/// The tiny preset's batch.
const TINY_BATCH: usize = 32;

/// Median seconds of one DiT-DH-S eval forward of `batch` images.
fn dit_s_forward<B: Backend>(b: &B, plan: Plan) -> Result<(f64, usize)> {
    let cfg = DitConfig::dh_s();
    let m = DitDh::new(b, &mut Init::new(0), cfg.clone())?;
    let params: usize = trainable_params(&m).iter().map(|t| t.numel()).sum();
    let g = cfg.input_size;
    let x = b.fill_normal(
        &[plan.batch, cfg.in_channels, g, g],
        PhiloxKey::new(1, 1),
        0,
    )?;
    let t: Vec<f32> = (0..plan.batch)
        .map(|i| (i as f32 + 0.5) / plan.batch as f32)
        .collect();
    let y: Vec<u32> = (0..plan.batch).map(|i| (i * 7 % 1000) as u32).collect();
    let s = median_secs(b, plan.fwd_iters, || {
        m.forward(b, &x, &t, &y, Mode::Infer).map(drop)
    })?;
    Ok((s, params))
}

/// Median seconds of one stage-2 step of the tiny preset (its optimiser: lr 1e-3 to 1e-4,
/// clip 1, EMA 0.995).
fn tiny_step<B: Backend>(b: &B, plan: Plan) -> Result<f64> {
    let opt = optimizer_config((1e-3, 1e-4), 0.995);
    stage2_step_secs(b, &tiny_dit(), TINY_BATCH, plan.step_iters, opt)
}

/// Runs both measurements on `b` and prints its table rows.
fn run<B: Backend>(b: &B, plan: Plan) {
    let name = b.name();
    match dit_s_forward(b, plan) {
        Ok((s, params)) => println!(
            "{name:<56} | DiT-DH-S forward ({:.1}M params) | batch {:>2} | {:>2} iters | \
             {:>9.1} ms | {:>8.2} img/s",
            params as f64 / 1e6,
            plan.batch,
            plan.fwd_iters,
            s * 1e3,
            plan.batch as f64 / s
        ),
        Err(e) => println!("{name:<56} | DiT-DH-S forward | error: {e}"),
    }
    match tiny_step(b, plan) {
        Ok(s) => println!(
            "{name:<56} | tiny stage-2 train step          | batch {TINY_BATCH:>2} | {:>2} iters | \
             {:>9.1} ms | {:>8.2} img/s",
            plan.step_iters,
            s * 1e3,
            TINY_BATCH as f64 / s
        ),
        Err(e) => println!("{name:<56} | tiny stage-2 train step | error: {e}"),
    }
}

fn main() {
    println!(
        "{:<56} | {:<32} | {:<8} | {:<8} | {:>12} | {:>14}",
        "backend", "what", "batch", "iters", "median", "throughput"
    );
    run(&CpuBackend::new(), CPU);
    let wgpu = WgpuOptions::from_env().and_then(|o| Ok((o.pick()?, o.build()?)));
    match wgpu {
        Ok((adapter, b)) => run(
            &b,
            if adapter.kind == AdapterKind::Cpu {
                SLOW
            } else {
                GPU
            },
        ),
        Err(e) => println!("SKIPPED: wgpu backend not present: {e}"),
    }
    match rae_backend_cuda::create(0) {
        Ok(b) => run(&b, GPU),
        Err(e) => println!("SKIPPED: cuda backend not present: {e}"),
    }
}
