//! Images/s of one stage-1 training step at the paper's shapes (§2.7): DINOv2-B encoder,
//! decoder ViT-B, 256² images, batch 8, with random weights — the L1 step alone, with
//! LPIPS (VGG-16), and the full objective (LPIPS + DINO ViT-S/8 discriminator, DiffAug, the
//! adaptive weight and the discriminator's own step). One warm-up step, then the mean of
//! `RAE_BENCH_STEPS` (default 2) timed steps, on the CPU (unless `RAE_BENCH_CPU=0`) and
//! (`RAE_BENCH_WGPU=1`) on WGPU. `RAE_BENCH_BATCH` changes the batch,
//! `RAE_BENCH_CASES=l1,lpips,gan` picks the cases, and `RAE_CPU_PROFILE=1` prints the CPU
//! backend's per-op table of the timed steps.
//!
//! `cargo bench -p rae-cli --bench stage1_step`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rae_cli::presets::assemble_rae;
use rae_core::gan::disc::{DiscConfig, Discriminator};
use rae_core::gan::lpips::{Lpips, VggConfig};
use rae_core::models::{DecoderConfig, Dinov2Config, Dinov2Encoder, Encoder, RaeDecoder};
use rae_core::nn::{Init, Module};
use rae_core::optim::{AdamWConfig, LrSchedule};
use rae_core::train::{
    DiscState, GanConfig, NoReduce, Optimizer, OptimizerConfig, RngState, RunState, Stage1Config,
    Stage1GanTrainer, Trainer,
};
use rae_core::{Backend, CpuBackend};

/// Images per step (`RAE_BENCH_BATCH`, default 8).
fn batch() -> usize {
    std::env::var("RAE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// Fills every tensor of `m` with small uniform values (the models start at zero/defaults).
fn randomise<B: Backend, M: Module<B>>(b: &B, m: &mut M, seed: u64) {
    let mut init = Init::new(seed);
    m.visit_mut(&mut |p| {
        let d = p.value.dims().to_vec();
        let fan = d.iter().skip(1).product::<usize>().max(1) as f32;
        let bound = (3.0 / fan).sqrt();
        p.value = init.uniform(b, &d, -bound, bound).unwrap();
    });
}

fn trainer<B: Backend>(b: &B, lpips: bool, disc: bool) -> Stage1GanTrainer<B> {
    let enc = Dinov2Encoder::new(b, &mut Init::new(1), Dinov2Config::base()).unwrap();
    let dec = RaeDecoder::new(b, &mut Init::new(2), DecoderConfig::vit_b()).unwrap();
    let rae = assemble_rae(Encoder::from(enc), dec, None, None).unwrap();
    let oc = OptimizerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule::stage1_reference(100).unwrap(),
        clip: None,
        ema_decay: 0.9978,
    };
    let lpips = lpips.then(|| {
        let mut lp = Lpips::new(b, &VggConfig::vgg16()).unwrap();
        randomise(b, &mut lp, 3);
        lp
    });
    let disc = disc.then(|| {
        let mut d = Discriminator::new(b, &mut Init::new(4), DiscConfig::s8()).unwrap();
        randomise(b, &mut d.backbone, 5);
        let opt = Optimizer::new(b, &d, oc.clone()).unwrap();
        DiscState { disc: d, opt }
    });
    Stage1GanTrainer {
        state: RunState {
            opt: Optimizer::new(b, &rae.decoder, oc).unwrap(),
            rng: RngState::new(0),
            metadata: Vec::new(),
        },
        rae,
        config: Stage1Config {
            noise_tau: 0.8,
            noise_rule: rae_core::models::NoiseRule::Uniform,
            shard: rae_core::train::Shard::SINGLE,
        },
        gan: GanConfig {
            perceptual_weight: if lpips.is_some() { 1.0 } else { 0.0 },
            disc_weight: if disc.is_some() { 0.75 } else { 0.0 },
            ..GanConfig::default()
        },
        lpips,
        disc,
    }
}

fn bench<B: Backend>(b: &B, name: &str, steps: usize) {
    let mut init = Init::new(9);
    let x = init.uniform(b, &[batch(), 3, 256, 256], 0.0, 1.0).unwrap();
    let cases = std::env::var("RAE_BENCH_CASES").unwrap_or_else(|_| "l1,lpips,gan".into());
    for (key, label, lp, d) in [
        ("l1", "L1", false, false),
        ("lpips", "L1 + LPIPS", true, false),
        ("gan", "L1 + LPIPS + GAN", true, true),
    ] {
        if !cases.split(',').any(|c| c == key) {
            continue;
        }
        let mut t = trainer(b, lp, d);
        t.train_step(b, &x, &mut NoReduce).unwrap();
        b.sync().unwrap();
        rae_core::cpu::profile::reset();
        let start = Instant::now();
        for _ in 0..steps {
            t.train_step(b, &x, &mut NoReduce).unwrap();
        }
        b.sync().unwrap();
        let s = start.elapsed().as_secs_f64() / steps as f64;
        println!(
            "{name:<10} {label:<18} {s:>8.2} s/step {:>7.3} img/s",
            batch() as f64 / s
        );
        if rae_core::cpu::profile::enabled() {
            println!("{}", rae_core::cpu::profile::report());
        }
    }
}

fn main() {
    let steps: usize = std::env::var("RAE_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    println!(
        "stage-1 step, decoder ViT-B, DINOv2-B encoder, 256², batch {}",
        batch()
    );
    if std::env::var("RAE_BENCH_CPU").map_or(true, |v| v != "0") {
        bench(&CpuBackend::new(), "cpu", steps);
    }
    #[cfg(feature = "wgpu")]
    if std::env::var("RAE_BENCH_WGPU").is_ok_and(|v| v == "1") {
        match rae_backend_wgpu::WgpuOptions::from_env().and_then(|o| o.build()) {
            Ok(w) => bench(&w, "wgpu", steps),
            Err(e) => println!("wgpu skipped: {e}"),
        }
    }
}
