//! The measurements of `scripts/gpu-check.sh`, one markdown table for every Cube backend
//! present (CUDA, and WGPU on a GPU adapter):
//!
//! - matmul `4096³` in fp32, tf32 and bf16 (§7.5), TFLOP/s;
//! - one DiT-DH-XL stage-2 training step (forward, MSE, backward, clipping, AdamW, EMA) at
//!   batch 32 and 64 under tf32 and bf16, images/s;
//! - DiT-DH-XL 50-step Euler sampling (no guidance), images/s;
//! - DINOv2-B encoding of 224² images, images/s;
//! - the memory pool's reserved bytes after each measurement (its high-water mark: the pool
//!   only grows until it is cleaned, which happens before each measurement).
//!
//! Random weights (throughput does not depend on them). Each row runs once untimed
//! (compilation, autotuning, pool growth), then times whole iterations ending in a device
//! sync and reports the median. A precision the device has no tensor cores for is
//! reported as such, not measured in f32 under its name.
//!
//! `RAE_GPU_CHECK_QUICK=1` shrinks every size (matmul 256³, DiT-DH-S, batch 2, 3 sampling
//! steps) and also accepts a CPU adapter (lavapipe), so the code can be exercised on a
//! machine without a GPU: `RAE_GPU_CHECK_QUICK=1 cargo bench -p rae-tests --bench gpu_check`.

use rae_backend_wgpu::{AdapterKind, WgpuOptions};
use rae_core::flow::{sample_ode, shift_factor, shifted_grid, Keep, OdeMethod};
use rae_core::models::{Dinov2Config, Dinov2Encoder, DitConfig, DitDh, Mode};
use rae_core::nn::Init;
use rae_core::{Backend, PhiloxKey, Precision, Result, Tensor};
use rae_kernels::cubecl::Runtime;
use rae_kernels::CubeBackend;
use rae_tests::bench::{median_secs, optimizer_config, stage2_step_secs};

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    matmul: usize,
    dit: DitConfig,
    dit_name: &'static str,
    train_batches: [usize; 2],
    sample_batch: usize,
    sample_steps: usize,
    dino_batch: usize,
    dino: Dinov2Config,
    iters: usize,
}

fn full() -> Plan {
    let mut dit = DitConfig::dh_xl();
    dit.input_size = 16;
    dit.in_channels = 768;
    Plan {
        matmul: 4096,
        dit,
        dit_name: "DiT-DH-XL",
        train_batches: [32, 64],
        sample_batch: 32,
        sample_steps: 50,
        dino_batch: 64,
        dino: Dinov2Config::base(),
        iters: 5,
    }
}

fn quick() -> Plan {
    let mut dit = DitConfig::dh_s();
    dit.input_size = 4;
    dit.in_channels = 32;
    let mut dino = Dinov2Config::base();
    dino.num_hidden_layers = 1;
    Plan {
        matmul: 256,
        dit,
        dit_name: "DiT-DH-S (quick)",
        train_batches: [2, 2],
        sample_batch: 2,
        sample_steps: 3,
        dino_batch: 2,
        dino,
        iters: 1,
    }
}

/// The pool's reserved GiB now (after a measurement: its high-water mark).
fn reserved_gib<R: Runtime>(b: &CubeBackend<R>) -> f64 {
    b.client()
        .memory_usage()
        .map(|u| u.bytes_reserved as f64 / (1u64 << 30) as f64)
        .unwrap_or(f64::NAN)
}

fn row(backend: &str, what: &str, prec: &str, batch: String, value: String, mem: f64) {
    println!("| {backend} | {what} | {prec} | {batch} | {value} | {mem:.2} |");
}

fn matmul<R: Runtime>(b: &CubeBackend<R>, n: usize, iters: usize) -> Result<f64> {
    let x = b.fill_normal(&[n, n], PhiloxKey::new(1, 1), 0)?;
    let w = b.fill_normal(&[n, n], PhiloxKey::new(2, 2), 0)?;
    let s = median_secs(b, iters.max(5), || b.matmul(&x, &w, false, true).map(drop))?;
    Ok(2.0 * (n as f64).powi(3) / s / 1e12)
}

fn train_step<B: Backend>(b: &B, cfg: &DitConfig, batch: usize, iters: usize) -> Result<f64> {
    let opt = optimizer_config((2e-4, 2e-5), 0.9995);
    Ok(batch as f64 / stage2_step_secs(b, cfg, batch, iters, opt)?)
}

fn sampling<B: Backend>(b: &B, cfg: &DitConfig, batch: usize, steps: usize) -> Result<f64> {
    let (c, g) = (cfg.in_channels, cfg.input_size);
    let m = DitDh::new(b, &mut Init::new(9), cfg.clone())?;
    let grid = shifted_grid(steps + 1, shift_factor(c * g * g, 4096)?, 0.0)?;
    let y: Vec<u32> = (0..batch).map(|i| (i % cfg.num_classes) as u32).collect();
    let noise = b.fill_normal(&[batch, c, g, g], PhiloxKey::new(4, 4), 0)?;
    let s = median_secs(b, 1, || {
        let mut field = |x: &Tensor<B>, t: f32| {
            m.forward(b, x, &vec![t; batch], &y, Mode::Infer)
                .map(|(v, _)| v)
        };
        sample_ode(
            b,
            &mut field,
            noise.clone(),
            &grid,
            OdeMethod::Euler,
            Keep::Last,
        )
        .map(drop)
    })?;
    Ok(batch as f64 / s)
}

fn dino<B: Backend>(b: &B, cfg: &Dinov2Config, batch: usize, iters: usize) -> Result<f64> {
    let m = Dinov2Encoder::new(b, &mut Init::new(11), cfg.clone())?;
    let x = b.fill_normal(&[batch, 3, 224, 224], PhiloxKey::new(5, 5), 0)?;
    let s = median_secs(b, iters, || m.forward(b, &x, Mode::Infer).map(drop))?;
    Ok(batch as f64 / s)
}

fn run<R: Runtime>(base: &CubeBackend<R>, plan: &Plan) {
    let name = base.name();
    let report = |what: &str,
                  prec: Precision,
                  batch: String,
                  r: Result<f64>,
                  unit: &str,
                  b: &CubeBackend<R>| {
        let value = match r {
            Ok(v) => format!("{v:.3} {unit}"),
            Err(e) => format!("error: {e}"),
        };
        row(&name, what, prec.name(), batch, value, reserved_gib(b));
    };
    for p in Precision::ALL {
        let b = base.clone().with_precision(p);
        if b.precision() != p {
            row(
                &name,
                &format!("matmul {0}³", plan.matmul),
                p.name(),
                "-".into(),
                "no tensor cores".into(),
                f64::NAN,
            );
            continue;
        }
        b.client().memory_cleanup();
        report(
            &format!("matmul {0}³", plan.matmul),
            p,
            "-".into(),
            matmul(&b, plan.matmul, plan.iters),
            "TFLOP/s",
            &b,
        );
    }
    // Training under tf32 and bf16; a device without tensor cores trains in f32 instead
    // (one row, so the step itself is still measured).
    let mut train_precisions = Vec::new();
    for p in [Precision::Tf32, Precision::Bf16] {
        if base.tensor_cores(p) {
            train_precisions.push(p);
        } else {
            let what = format!("{} train step", plan.dit_name);
            row(
                &name,
                &what,
                p.name(),
                "-".into(),
                "no tensor cores".into(),
                f64::NAN,
            );
        }
    }
    if train_precisions.is_empty() {
        train_precisions.push(Precision::Fp32);
    }
    for p in train_precisions {
        let b = base.clone().with_precision(p);
        for batch in plan.train_batches {
            b.client().memory_cleanup();
            let r = train_step(&b, &plan.dit, batch, plan.iters);
            let what = format!("{} train step", plan.dit_name);
            report(&what, p, batch.to_string(), r, "img/s", &b);
        }
    }
    // Sampling and encoding in the backend's default precision for CUDA (tf32 where it has
    // tensor cores, else f32).
    let b = base.clone().with_precision(Precision::Tf32);
    b.client().memory_cleanup();
    let r = sampling(&b, &plan.dit, plan.sample_batch, plan.sample_steps);
    let what = format!(
        "{} {}-step Euler sampling",
        plan.dit_name, plan.sample_steps
    );
    report(
        &what,
        b.precision(),
        plan.sample_batch.to_string(),
        r,
        "img/s",
        &b,
    );
    b.client().memory_cleanup();
    let r = dino(&b, &plan.dino, plan.dino_batch, plan.iters);
    report(
        "DINOv2-B encode 224²",
        b.precision(),
        plan.dino_batch.to_string(),
        r,
        "img/s",
        &b,
    );
}

fn main() {
    let quick_mode = std::env::var("RAE_GPU_CHECK_QUICK").as_deref() == Ok("1");
    let plan = if quick_mode { quick() } else { full() };
    println!("| backend | measurement | precision | batch | result | pool GiB |");
    println!("|---|---|---|---|---|---|");
    match rae_backend_cuda::create(0) {
        Ok(b) => run(&b, &plan),
        Err(e) => println!("| cuda | not present: {e} | | | | |"),
    }
    let wgpu = WgpuOptions::from_env().and_then(|o| Ok((o.pick()?, o.build()?)));
    match wgpu {
        Ok((a, b)) if a.kind != AdapterKind::Cpu || quick_mode => run(&b, &plan),
        Ok((a, _)) => println!("| wgpu | only a CPU adapter ({}) | | | | |", a.name),
        Err(e) => println!("| wgpu | not present: {e} | | | | |"),
    }
}
