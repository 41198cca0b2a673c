//! Training end to end in rae-core: a tiny DiT-DH trained by the stage-2 step on a
//! class-conditional toy distribution must learn to sample each class's mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::flow::{sample_ode, shifted_grid, Keep, OdeMethod, TimeDist};
use rae_core::models::{DitConfig, DitDh, Mode};
use rae_core::nn::Init;
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::train::{stage2_step, Optimizer, OptimizerConfig, RngState, Stage2Config};
use rae_core::{Backend, CpuBackend};

const C: usize = 4;
const G: usize = 2;
const D: usize = C * G * G;
const K: usize = 4;

/// Class k's latent: +2 on channel k, −0.5 elsewhere, plus N(0, 0.1²) noise.
fn class_mode(k: usize) -> Vec<f32> {
    (0..D)
        .map(|i| if i / (G * G) == k { 2.0 } else { -0.5 })
        .collect()
}

#[test]
fn tiny_dit_learns_class_conditional_modes() {
    let b = CpuBackend::new();
    let cfg = DitConfig {
        input_size: G,
        patch_size: 1,
        in_channels: C,
        hidden_enc: 32,
        hidden_dec: 32,
        depth_enc: 1,
        depth_dec: 1,
        heads_enc: 2,
        heads_dec: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: K,
        use_pos_embed: true,
    };
    let mut model = DitDh::new(&b, &mut Init::new(3), cfg).unwrap();
    let steps = 1500;
    let ocfg = OptimizerConfig {
        adamw: AdamWConfig {
            lr: 2e-3,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule {
            base_lr: 2e-3,
            final_lr: 2e-4,
            warmup_steps: 20,
            decay_end_step: steps,
            warmup: Warmup::FromZero,
            decay: Decay::Linear,
        },
        clip: Some(1.0),
        ema_decay: 0.9,
    };
    let mut opt = Optimizer::new(&b, &model, ocfg).unwrap();
    let mut rng = RngState::new(1);
    let s2 = Stage2Config {
        time_dist: TimeDist::parse("logit-normal_0_1").unwrap(),
        shift: 1.0,
        label_dropout: 0.1,
        shard: Default::default(),
    };
    let bs = 32;
    let mut noise = rae_core::rng::PhiloxStream::new(5, 5);
    let mut first = 0.0;
    let mut last = 0.0;
    for step in 0..steps {
        let labels: Vec<u32> = (0..bs).map(|i| ((i + step as usize) % K) as u32).collect();
        let mut z = Vec::with_capacity(bs * D);
        for &l in &labels {
            let mut e = vec![0.0f32; D];
            noise.normals(&mut e);
            z.extend(
                class_mode(l as usize)
                    .iter()
                    .zip(&e)
                    .map(|(m, n)| m + 0.1 * n),
            );
        }
        let z = b.upload(&z, &[bs, C, G, G]).unwrap();
        let (loss, _) = stage2_step(&b, &mut model, &mut opt, &mut rng, &s2, &z, &labels).unwrap();
        if step < 10 {
            first += loss / 10.0;
        }
        if step >= steps - 10 {
            last += loss / 10.0;
        }
    }
    eprintln!("loss: first 10 steps {first:.3}, last 10 steps {last:.3}");
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
    let ema = opt.ema_model(&model).unwrap();
    {
        let x = b
            .fill_normal(&[4, C, G, G], rae_core::PhiloxKey::new(2, 2), 0)
            .unwrap();
        for t in [0.9f32, 0.5, 0.1] {
            let v0 = b
                .download(
                    &ema.forward(&b, &x, &[t; 4], &[0, 0, 0, 0], Mode::Infer)
                        .unwrap()
                        .0,
                )
                .unwrap();
            let v1 = b
                .download(
                    &ema.forward(&b, &x, &[t; 4], &[1, 2, 3, 4], Mode::Infer)
                        .unwrap()
                        .0,
                )
                .unwrap();
            let d: f32 =
                v0.iter().zip(&v1).map(|(a, c)| (a - c).abs()).sum::<f32>() / v0.len() as f32;
            let m: f32 = v0.iter().map(|a| a.abs()).sum::<f32>() / v0.len() as f32;
            eprintln!("t {t}: mean |v(y=0) - v(y')| = {d:.4}, mean |v| = {m:.4}");
        }
        let tab = b.download(&ema.y_embedder.table.value).unwrap();
        eprintln!("label table rows 0..2: {:?}", &tab[..8]);
    }
    let n = 8;
    let labels: Vec<u32> = (0..K as u32)
        .flat_map(|k| std::iter::repeat_n(k, n))
        .collect();
    let x0 = b
        .fill_normal(&[K * n, C, G, G], rae_core::PhiloxKey::new(9, 9), 0)
        .unwrap();
    let grid = shifted_grid(30, 1.0, 0.0).unwrap();
    let mut field = |x: &rae_core::Tensor<CpuBackend>, t: f32| {
        ema.forward(&b, x, &vec![t; K * n], &labels, Mode::Infer)
            .map(|r| r.0)
    };
    let out = b
        .download(
            &sample_ode(&b, &mut field, x0, &grid, OdeMethod::Euler, Keep::Last)
                .unwrap()
                .x,
        )
        .unwrap();
    // Each sample must be nearest to its own class's mode.
    let mut correct = 0;
    for (i, &l) in labels.iter().enumerate() {
        let s = &out[i * D..(i + 1) * D];
        let nearest = (0..K)
            .min_by(|&a, &c| {
                let da: f32 = s
                    .iter()
                    .zip(class_mode(a))
                    .map(|(x, m)| (x - m).powi(2))
                    .sum();
                let dc: f32 = s
                    .iter()
                    .zip(class_mode(c))
                    .map(|(x, m)| (x - m).powi(2))
                    .sum();
                da.total_cmp(&dc)
            })
            .unwrap();
        if nearest == l as usize {
            correct += 1;
        }
    }
    eprintln!(
        "{correct}/{} samples nearest to their class mode",
        labels.len()
    );
    assert!(
        correct >= labels.len() * 9 / 10,
        "only {correct}/{} samples follow their label",
        labels.len()
    );
}
