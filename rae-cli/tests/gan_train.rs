//! `train --stage 1` with the full objective (§2.7) end to end on the built-in data: a tiny
//! random VGG for LPIPS (with v0.1-shaped heads), the tiny DINO discriminator backbone of
//! the parity fixture, DiffAug and the adaptive weight. The losses move, every term is
//! logged, a run stopped and resumed writes the same checkpoint as an uninterrupted one,
//! and missing or wrong weight files are errors naming the flag and the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails, ok, tmp};
use rae_cli::store::{load_tensor_file, save_encoder_dir, save_safetensors};
use rae_core::gan::lpips::VggConfig;
use rae_core::models::{Dinov2Encoder, Encoder};
use rae_core::nn::{HostTensor, HostTensors, Init};
use rae_core::safetensors::SafeTensors;
use rae_core::CpuBackend;
use rae_tests::synthetic::{synthetic, synthetic_vgg};
use rae_tests::util::fixture;

/// The weight files and the encoder, made once.
struct Files {
    encoder: PathBuf,
    vgg: PathBuf,
    lin: PathBuf,
    dino: PathBuf,
}

fn files() -> &'static Files {
    static F: OnceLock<Files> = OnceLock::new();
    F.get_or_init(|| {
        let d = tmp("gan-weights");
        let b = CpuBackend::new();
        let encoder = d.join("encoder");
        let enc =
            Dinov2Encoder::new(&b, &mut Init::new(7), rae_cli::presets::tiny_encoder()).unwrap();
        save_encoder_dir(&b, &Encoder::from(enc), &encoder).unwrap();
        // A tiny VGG (same layout as VGG-16, fewer channels) and non-negative heads.
        let vc = VggConfig::tiny();
        let vgg = synthetic_vgg(&vc, 6f32.sqrt()).unwrap();
        let mut lin = HostTensors::new();
        for (k, ch) in vc.tap_channels().into_iter().enumerate() {
            let n = format!("lin{k}.model.1.weight");
            let w = synthetic(&n, &[1, ch, 1, 1])
                .iter()
                .map(|v| v.abs())
                .collect();
            lin.insert(n, HostTensor::new(vec![1, ch, 1, 1], w).unwrap());
        }
        // The tiny DINO checkpoint of the discriminator fixture (reference layout).
        let bytes = fixture("gan_disc.safetensors");
        let f = SafeTensors::parse(&bytes, "gan_disc.safetensors").unwrap();
        let mut dino = HostTensors::new();
        for name in f.names() {
            if let Some(n) = name.strip_prefix("dino.") {
                let t = f.tensor(name).unwrap();
                dino.insert(
                    n,
                    HostTensor::new(t.shape.clone(), f.read_f32(name).unwrap()).unwrap(),
                );
            }
        }
        let (vp, lp, dp) = (
            d.join("vgg.safetensors"),
            d.join("lin.safetensors"),
            d.join("dino.safetensors"),
        );
        save_safetensors(&vp, &vgg, &[]).unwrap();
        save_safetensors(&lp, &lin, &[]).unwrap();
        save_safetensors(&dp, &dino, &[]).unwrap();
        Files {
            encoder,
            vgg: vp,
            lin: lp,
            dino: dp,
        }
    })
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `train --stage 1` with the full objective into `out`, plus `extra` flags.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let f = files();
    let mut a: Vec<String> = [
        "train",
        "--stage",
        "1",
        "--decoder-config",
        "tiny",
        "--builtin-size",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        "6",
        "--ckpt-every",
        "3",
        "--log-every",
        "1",
        "--disc-recipe",
        "tiny",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    for (flag, p) in [
        ("--encoder", &f.encoder),
        ("--vgg-weights", &f.vgg),
        ("--lpips-weights", &f.lin),
        ("--disc-weights", &f.dino),
        ("--out", &out.to_path_buf()),
    ] {
        a.push(flag.into());
        a.push(s(p));
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn run_ok(a: &[String]) -> String {
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The values of `name` on each logged line.
fn logged(log: &str, name: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("stage 1 step"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == name)?;
            w.get(i + 1)?.parse().ok()
        })
        .collect()
}

#[test]
fn full_objective_trains_logs_every_term_and_resumes_exactly() {
    let a = tmp("gan-a");
    let log = run_ok(&args(&a, &[]));
    for term in ["L1", "LPIPS", "G", "lambda", "D", "D_acc", "lr_D"] {
        assert_eq!(logged(&log, term).len(), 6, "{term} on every line:\n{log}");
    }
    let (l1, d, lp) = (logged(&log, "L1"), logged(&log, "D"), logged(&log, "LPIPS"));
    assert!(
        l1.first() != l1.last() && d.first() != d.last() && lp.first() != lp.last(),
        "{log}"
    );
    assert!(
        logged(&log, "lambda")
            .iter()
            .all(|x| x.is_finite() && *x >= 0.0),
        "{log}"
    );
    assert!(
        log.contains("disc_recipe") && log.contains("perceptual_weight"),
        "{log}"
    );

    // Stopped at step 3 and resumed: the same final checkpoint, tensor for tensor (the
    // discriminator heads, their u/v vectors and both optimisers included).
    let b = tmp("gan-b");
    let _ = common::run(
        &args(&b, &["--stop-at", "3"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    run_ok(&args(&b, &["--resume"]));
    let ta = load_tensor_file(&a.join("decoder-train.safetensors"))
        .unwrap()
        .tensors;
    let tb = load_tensor_file(&b.join("decoder-train.safetensors"))
        .unwrap()
        .tensors;
    assert!(ta
        .names()
        .any(|n| n.starts_with("disc.heads.0.0.0.weight_u")));
    assert!(ta.names().any(|n| n.starts_with("disc.opt.m.")));
    assert_eq!(ta.len(), tb.len());
    for (n, t) in ta.iter() {
        assert_eq!(Some(t), tb.get(n), "{n} differs after the resume");
    }
}

#[test]
fn no_gan_trains_with_the_l1_loss_alone() {
    let out = tmp("gan-off");
    let log = run_ok(&args(&out, &["--no-gan"]));
    assert!(
        logged(&log, "LPIPS").is_empty() && log.contains("objective"),
        "{log}"
    );
    let t = load_tensor_file(&out.join("decoder-train.safetensors"))
        .unwrap()
        .tensors;
    assert!(!t.names().any(|n| n.starts_with("disc.")));
}

#[test]
fn missing_or_wrong_weight_files_are_named() {
    let out = tmp("gan-missing");
    let f = files();
    let mut a = args(&out, &[]);
    let i = a.iter().position(|x| x == "--disc-weights").unwrap();
    a[i + 1] = "/nonexistent/dino.pth".into();
    let e = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("--disc-weights") && e.contains("/nonexistent/dino.pth"),
        "{e}"
    );
    // LPIPS weights without the VGG.
    let mut a = args(&out, &[]);
    let i = a.iter().position(|x| x == "--vgg-weights").unwrap();
    a.drain(i..i + 2);
    let e = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("--vgg-weights"), "{e}");
    // The VGG file given as the DINO checkpoint.
    let mut a = args(&out, &[]);
    let i = a.iter().position(|x| x == "--disc-weights").unwrap();
    a[i + 1] = s(&f.vgg);
    let e = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("--disc-weights") && e.contains("vgg.safetensors"),
        "{e}"
    );
}

/// `--config` with the reference's `gan` block: the DINO checkpoint path, the recipe and
/// the epoch switches come from the YAML (4 steps per epoch here: the discriminator updates
/// from step 2, the adversarial term joins from step 3), the LPIPS weights from the flags;
/// without them the error names the flag and the config.
#[test]
fn the_reference_gan_block_drives_the_objective() {
    let f = files();
    let d = tmp("gan-config");
    let yaml = format!(
        "training:\n  global_batch_size: 8\ngan:\n  disc:\n    arch:\n      dino_ckpt_path: '{}'\n      ks: 9\n      norm_type: 'bn'\n      using_spec_norm: true\n      recipe: 'tiny'\n    augment:\n      prob: 1.0\n      cutout: 0.0\n  loss:\n    disc_loss: hinge\n    gen_loss: vanilla\n    disc_weight: 0.75\n    perceptual_weight: 1.0\n    disc_start: 0.5\n    disc_upd_start: 0.25\n    lpips_start: 0\n    max_d_weight: 10000.0\n    disc_updates: 1\n",
        f.dino.display()
    );
    let cfg = d.join("stage1.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let base = |out: &str| -> Vec<String> {
        [
            "train",
            "--config",
            &s(&cfg),
            "--encoder",
            &s(&f.encoder),
            "--decoder-config",
            "tiny",
            "--builtin-size",
            "32",
            "--max-steps",
            "4",
            "--log-every",
            "1",
            "--out",
            &s(&d.join(out)),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let mut a = base("run");
    a.extend([
        "--vgg-weights".into(),
        s(&f.vgg),
        "--lpips-weights".into(),
        s(&f.lin),
    ]);
    let log = run_ok(&a);
    let (g, dl) = (logged(&log, "G"), logged(&log, "D"));
    assert_eq!((g.len(), dl.len()), (4, 4), "{log}");
    assert!(
        g[0] == 0.0 && g[1] == 0.0 && g[2] != 0.0 && g[3] != 0.0,
        "G from step 3:\n{log}"
    );
    assert!(dl[0] == 0.0 && dl[1] != 0.0, "D from step 2:\n{log}");
    assert!(logged(&log, "LPIPS").iter().all(|v| *v > 0.0), "{log}");
    let e = fails(
        &base("no-vgg")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        e.contains("--vgg-weights") && e.contains("stage1.yaml"),
        "{e}"
    );
}
