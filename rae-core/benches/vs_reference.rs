//! `CpuBackend` against the reference (PyTorch running the reference's own modules) in one
//! run on one machine, so every speed claim is a ratio measured side by side:
//!
//! ```text
//! RAE_REF_PYTHON=/path/to/python RAE_REF_SRC=/path/to/RAE \
//!     cargo bench -p rae-core --bench vs_reference
//! ```
//!
//! `RAE_REF_PYTHON` is a Python with torch, timm and transformers; `RAE_REF_SRC` a checkout of
//! the reference repository (github.com/bytetriper/RAE). Without them the reference column
//! says it was skipped. `RAE_BENCH_ITERS` (default 3) sets the timed runs per case,
//! `RAE_BENCH_CASES` a comma-separated subset of the case names below. Both sides use the
//! same thread count (the CPU backend's, that is every core) and random weights; each case
//! runs once untimed, then the median of the timed runs is reported.
//!
//! | case | work |
//! |---|---|
//! | `dit_s_fwd` | DiT-DH-S (§3.9) eval forward, 16×16×768 latents, batch 4 |
//! | `dit_s_step` | one DiT-DH-S stage-2 step (§4–§5.1: forward, MSE, backward, clip 1, AdamW, EMA), batch 4 |
//! | `dinov2_b_fwd` | DINOv2-B/14 with 4 registers (§2.2) forward at 224², batch 4 |
//! | `dit_xl_fwd` | DiT-DH-XL eval forward, batch 1 |
//! | `decoder_xl_fwd` | ViT-XL RAE decoder (§2.6) forward on 256 tokens of 768, batch 1 |
//!
//! With `RAE_CPU_PROFILE=1` one more run of each case, after the timed ones, is printed op by
//! op (calls, time, share, GFLOP/s or GB/s: the CPU backend's per-op profile,
//! `rae_core::cpu::profile`).
//!
//! GFLOP/s counts the FLOPs of one run (2 per multiply-add of the matrix products and the
//! attention) as PyTorch's `FlopCounterMode` counts them on the reference side; without the
//! reference the CPU backend's own per-op profile counts them.

use std::process::Command;
use std::time::Instant;

use rae_core::cpu::{par, profile};
use rae_core::flow::{shift_factor, TimeDist};
use rae_core::models::{
    DecoderConfig, Dinov2Config, Dinov2Encoder, DitConfig, DitDh, Mode, RaeDecoder,
};
use rae_core::nn::Init;
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::train::{stage2_step, Optimizer, OptimizerConfig, RngState, Stage2Config};
use rae_core::{Backend, CpuBackend, PhiloxKey, Result};

/// One run of a case, built once.
type Run<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// The cases in table order: name, batch, what it is.
const CASES: &[(&str, usize, &str)] = &[
    ("dit_s_fwd", 4, "DiT-DH-S forward"),
    ("dit_s_step", 4, "DiT-DH-S training step"),
    ("dinov2_b_fwd", 4, "DINOv2-B/14-reg forward at 224"),
    ("dit_xl_fwd", 1, "DiT-DH-XL forward"),
    ("decoder_xl_fwd", 1, "ViT-XL decoder forward"),
];

/// A DiT-DH eval forward of `batch` random latents.
fn dit_forward<'a>(b: &'a CpuBackend, cfg: DitConfig, batch: usize) -> Result<Run<'a>> {
    let m = DitDh::new(b, &mut Init::new(0), cfg.clone())?;
    let g = cfg.input_size;
    let x = b.fill_normal(&[batch, cfg.in_channels, g, g], PhiloxKey::new(1, 1), 0)?;
    let t: Vec<f32> = (0..batch)
        .map(|i| (i as f32 + 0.5) / batch as f32)
        .collect();
    let y: Vec<u32> = (0..batch).map(|i| (i * 7 % 1000) as u32).collect();
    Ok(Box::new(move || {
        m.forward(b, &x, &t, &y, Mode::Infer).map(drop)
    }))
}

/// One stage-2 training step of DiT-DH-S on `batch` random latents.
fn dit_step(b: &CpuBackend, batch: usize) -> Result<Run<'_>> {
    let cfg = DitConfig::dh_s();
    let (c, g) = (cfg.in_channels, cfg.input_size);
    let mut m = DitDh::new(b, &mut Init::new(0xD17), cfg.clone())?;
    let opt = OptimizerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule {
            base_lr: 2e-4,
            final_lr: 2e-4,
            warmup_steps: 0,
            decay_end_step: 1,
            warmup: Warmup::Constant,
            decay: Decay::Linear,
        },
        clip: Some(1.0),
        ema_decay: 0.9999,
    };
    let mut opt = Optimizer::new(b, &m, opt)?;
    let mut rng = RngState::new(0);
    let s2 = Stage2Config {
        time_dist: TimeDist::parse("logit-normal_0_1")?,
        shift: shift_factor(c * g * g, 4096)?,
        label_dropout: cfg.class_dropout_prob,
        shard: Default::default(),
    };
    let z = b.fill_normal(&[batch, c, g, g], PhiloxKey::new(2, 2), 0)?;
    let labels: Vec<u32> = (0..batch).map(|i| (i * 37 % 1000) as u32).collect();
    Ok(Box::new(move || {
        stage2_step(b, &mut m, &mut opt, &mut rng, &s2, &z, &labels).map(drop)
    }))
}

/// A DINOv2-B/14-reg forward of `batch` random 224² images.
fn dinov2_forward(b: &CpuBackend, batch: usize) -> Result<Run<'_>> {
    let enc = Dinov2Encoder::new(b, &mut Init::new(3), Dinov2Config::base())?;
    let x = b.fill_normal(&[batch, 3, 224, 224], PhiloxKey::new(3, 3), 0)?;
    Ok(Box::new(move || enc.forward(b, &x, Mode::Infer).map(drop)))
}

/// A ViT-XL decoder forward of `batch` random token grids.
fn decoder_forward(b: &CpuBackend, batch: usize) -> Result<Run<'_>> {
    let dec = RaeDecoder::new(b, &mut Init::new(4), DecoderConfig::vit_xl())?;
    let z = b.fill_normal(&[batch, 256, 768], PhiloxKey::new(4, 4), 0)?;
    Ok(Box::new(move || dec.forward(b, &z, Mode::Infer).map(drop)))
}

fn build<'a>(b: &'a CpuBackend, name: &str, batch: usize) -> Result<Run<'a>> {
    match name {
        "dit_s_fwd" => dit_forward(b, DitConfig::dh_s(), batch),
        "dit_s_step" => dit_step(b, batch),
        "dinov2_b_fwd" => dinov2_forward(b, batch),
        "dit_xl_fwd" => dit_forward(b, DitConfig::dh_xl(), batch),
        _ => decoder_forward(b, batch),
    }
}

/// Our side of one case: (median seconds, FLOPs of one run by the per-op profile).
fn ours(b: &CpuBackend, name: &str, batch: usize, iters: usize) -> Result<(f64, f64)> {
    let mut run = build(b, name, batch)?;
    // The untimed run, profiled to count the FLOPs.
    profile::force(true);
    profile::reset();
    run()?;
    let flops = profile::matmul_flops();
    profile::force(false);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    // The op-by-op table of a warm run (buffers kept from the runs before, as in the timed
    // runs): the first run also pays for the first touch of every fresh page.
    if std::env::var_os(profile::ENV_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        profile::force(true);
        profile::reset();
        run()?;
        profile::force(false);
        println!(
            "== {name}, batch {batch}: a warm run op by op\n{}",
            profile::report()
        );
    }
    Ok((median(times), flops))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One case measured on the reference's side.
struct Row {
    case: String,
    secs: f64,
    flops: f64,
    /// Which PyTorch ran which reference checkout.
    about: String,
}

/// The reference's side: case name → (median seconds, FLOPs), or why it was skipped.
fn reference(
    cases: &[&str],
    iters: usize,
    threads: usize,
) -> std::result::Result<Vec<Row>, String> {
    let (Ok(py), Ok(src)) = (
        std::env::var("RAE_REF_PYTHON"),
        std::env::var("RAE_REF_SRC"),
    ) else {
        return Err("skipped: set RAE_REF_PYTHON and RAE_REF_SRC to run it".into());
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/vs_reference.py");
    let out = Command::new(&py)
        .args([script, "--ref", &src, "--threads", &threads.to_string()])
        .args(["--iters", &iters.to_string(), "--cases", &cases.join(",")])
        .output()
        .map_err(|e| format!("cannot run {py}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "{py} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v = rae_core::json::parse(line).map_err(|e| format!("bad line {line}: {e}"))?;
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let case = v
            .get("case")
            .and_then(|x| x.as_str())
            .unwrap_or("?")
            .to_string();
        let torch = v.get("torch").and_then(|x| x.as_str()).unwrap_or("?");
        rows.push(Row {
            case,
            secs: f("secs").unwrap_or(f64::NAN),
            flops: f("flops").unwrap_or(f64::NAN),
            about: format!("PyTorch {torch} running {src}"),
        });
    }
    Ok(rows)
}

fn main() {
    let iters: usize = std::env::var("RAE_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let wanted = std::env::var("RAE_BENCH_CASES").ok();
    let cases: Vec<&(&str, usize, &str)> = CASES
        .iter()
        .filter(|c| {
            wanted
                .as_deref()
                .is_none_or(|w| w.split(',').any(|n| n == c.0))
        })
        .collect();
    let threads = par::threads();
    let b = CpuBackend::new();
    let mut mine = Vec::new();
    for &&(name, batch, _) in &cases {
        let r = ours(&b, name, batch, iters);
        if let Err(e) = &r {
            eprintln!("{name}: {e}");
        }
        mine.push(r.ok());
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let theirs = reference(&names, iters, threads);
    println!("CpuBackend vs the reference (PyTorch), {threads} threads, f32, median of {iters} after a warm-up");
    println!(
        "| work | batch | reference img/s | reference GFLOP/s | rae img/s | rae GFLOP/s | rae / reference |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, m) in cases.iter().zip(&mine) {
        let (name, batch, what) = **c;
        let r = theirs
            .as_ref()
            .ok()
            .and_then(|rows| rows.iter().find(|r| r.case == name));
        let flops = r.map(|r| r.flops).or(m.map(|m| m.1)).unwrap_or(f64::NAN);
        let cell = |secs: f64| format!("{:.2} | {:.0}", batch as f64 / secs, flops / secs / 1e9);
        let ref_cell = r.map_or("– | –".to_string(), |r| cell(r.secs));
        let our_cell = m.map_or("error | –".to_string(), |m| cell(m.0));
        let ratio = match (r, m) {
            (Some(r), Some(m)) => format!("**{:.2}**", r.secs / m.0),
            _ => "–".to_string(),
        };
        println!("| {what} | {batch} | {ref_cell} | {our_cell} | {ratio} |");
    }
    match theirs {
        Ok(rows) => println!(
            "reference: {}",
            rows.first().map_or("?", |r| r.about.as_str())
        ),
        Err(e) => println!("reference: {e}"),
    }
}
