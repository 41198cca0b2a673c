//! End-to-end runs of the `rae-cli` binary on the built-in tiny preset: the pipeline, an
//! interrupted-and-resumed run against an uninterrupted one, sampling, the encode/decode
//! round trip, and every bad-input case of the issue (each must fail with an error that
//! names the culprit, a non-zero exit code and no partial output).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rae_cli::store::load_tensor_file;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rae-cli")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rae-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(["--backend", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rae-cli {args:?} failed:\n{err}");
    err
}

/// Fails and returns the error text (stderr), which must be one `error: ...` paragraph.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "rae-cli {args:?} should have failed:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "rae-cli {args:?} panicked:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    line.to_string()
}

fn no_temp_files(dir: &Path) {
    for e in walk(dir) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.contains(".tmp-"),
            "partial output left behind: {}",
            e.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A trained tiny run shared by the tests (pipeline with few steps).
fn tiny_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = tmp("pipeline");
        let log = ok(&[
            "train",
            "--out",
            out.to_str().unwrap(),
            "--stage1-steps",
            "40",
            "--max-steps",
            "60",
            "--builtin-size",
            "300",
            "--ckpt-every",
            "20",
            "--log-every",
            "20",
            "--sample-steps",
            "6",
        ]);
        assert!(log.contains("stage 2 step 60/60"), "{log}");
        out
    })
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn last_loss(log: &str, stage: &str) -> f64 {
    log.lines()
        .rev()
        .filter(|l| l.starts_with(stage))
        .filter_map(|l| l.split(" loss ").nth(1).or_else(|| l.split(" L1 ").nth(1)))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .next()
        .unwrap()
}

#[test]
fn pipeline_writes_every_artefact_and_learns() {
    let out = tiny_run();
    for f in [
        "rae/encoder/config.json",
        "rae/encoder/model.safetensors",
        "rae/decoder.safetensors",
        "rae/stats.safetensors",
        "dit-train.safetensors",
        "decoder-train.safetensors",
        "samples/final.png",
        "train.log",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let log = std::fs::read_to_string(out.join("train.log")).unwrap();
    // Fixed seed: flow-matching loss starts near 2 (unit-variance data and noise) and must
    // fall below 1.2 within 60 steps; the decoder's L1 must fall below 0.2.
    let loss = last_loss(&log, "stage 2");
    assert!(loss < 1.2, "stage-2 loss after 60 steps: {loss}");
    let l1 = last_loss(&log, "stage 1");
    assert!(l1 < 0.2, "stage-1 L1 after 40 steps: {l1}");
    // The checkpoint carries model, EMA, optimiser state, step, RNG state and config.
    let ck = load_tensor_file(&out.join("dit-train.safetensors")).unwrap();
    assert_eq!(ck.meta("step"), Some("60"));
    assert!(
        ck.meta("rng.noise").is_some() && ck.meta("config").unwrap().contains("\"hidden_size\"")
    );
    assert!(
        ck.tensors.get("ema.t_embedder.W").is_some()
            && ck.tensors.get("opt.m.blocks.0.attn.qkv.weight").is_some()
    );
    no_temp_files(out);
}

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    let rae = tiny_run().join("rae");
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    let common = |out: &Path, steps: &str| -> Vec<String> {
        [
            "train",
            "--stage",
            "2",
            "--rae",
            rae.to_str().unwrap(),
            "--builtin-size",
            "300",
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            steps,
            "--ckpt-every",
            "3",
            "--log-every",
            "100",
            "--sample-steps",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    ok(&args(&common(&a, "6")));
    let mut interrupted = common(&b, "6");
    interrupted.extend(["--stop-at".to_string(), "3".to_string()]);
    let log = ok(&args(&interrupted));
    assert!(log.contains("stopped at step 3"), "{log}");
    let mut resumed = common(&b, "6");
    resumed.push("--resume".into());
    let log = ok(&args(&resumed));
    assert!(log.contains("resuming"), "{log}");
    let ta = load_tensor_file(&a.join("dit-train.safetensors")).unwrap();
    let tb = load_tensor_file(&b.join("dit-train.safetensors")).unwrap();
    assert_eq!(ta.tensors.len(), tb.tensors.len());
    for (name, t) in ta.tensors.iter() {
        let u = tb.tensors.get(name).unwrap();
        assert!(
            t.data
                .iter()
                .zip(&u.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs after resume"
        );
    }
    assert_eq!(ta.meta("rng.noise"), tb.meta("rng.noise"));
    // Without --resume an existing run is not overwritten.
    let e = fails(&args(&common(&a, "6")));
    assert!(
        e.contains("already exists") && e.contains("--resume"),
        "{e}"
    );
}

#[test]
fn sample_writes_pngs_grid_and_latents() {
    let run_dir = tiny_run();
    let out = tmp("sample");
    let lat = out.join("latents.safetensors");
    let log = ok(&[
        "sample",
        "--ckpt",
        run_dir.join("dit-train.safetensors").to_str().unwrap(),
        "--classes",
        "0,3",
        "--num",
        "2",
        "--steps",
        "5",
        "--cfg-scale",
        "2",
        "--cfg-interval",
        "0,0.9",
        "--out",
        out.to_str().unwrap(),
        "--save-latents",
        lat.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    assert!(log.contains("sampling 4 images"), "{log}");
    assert!(out.join("grid.png").exists() && out.join("000003-class3.png").exists());
    let l = load_tensor_file(&lat).unwrap();
    assert_eq!(l.tensors.get("latents").unwrap().shape, vec![4, 32, 8, 8]);
    // The same seed gives the same latents; --init-noise from a file is honoured.
    let out2 = tmp("sample2");
    let noise = out2.join("noise.safetensors");
    let zeros = vec![0.0f32; 4 * 32 * 64];
    std::fs::write(
        &noise,
        rae_core::safetensors::serialize(
            &[rae_core::safetensors::TensorOut::f32(
                "noise",
                &[4, 32, 8, 8],
                &zeros,
            )],
            &[],
        )
        .unwrap(),
    )
    .unwrap();
    let lat2 = out2.join("l.safetensors");
    ok(&[
        "sample",
        "--ckpt",
        run_dir.join("dit-train.safetensors").to_str().unwrap(),
        "--classes",
        "0,3",
        "--num",
        "2",
        "--steps",
        "5",
        "--out",
        out2.to_str().unwrap(),
        "--init-noise",
        noise.to_str().unwrap(),
        "--save-latents",
        lat2.to_str().unwrap(),
    ]);
    let l2 = load_tensor_file(&lat2).unwrap();
    assert_ne!(
        l.tensors.get("latents").unwrap().data,
        l2.tensors.get("latents").unwrap().data
    );
    // AutoGuidance with the model as its own guide at w = 1 is the unguided sample.
    let (g1, g2) = (tmp("ag1"), tmp("ag2"));
    let ck = run_dir.join("dit-train.safetensors");
    ok(&[
        "sample",
        "--ckpt",
        ck.to_str().unwrap(),
        "--class",
        "1",
        "--num",
        "2",
        "--steps",
        "4",
        "--out",
        g1.to_str().unwrap(),
        // Unguided: without it the scale the run was trained with (CFG) would apply.
        "--cfg-scale",
        "1",
        "--save-latents",
        g1.join("l.safetensors").to_str().unwrap(),
    ]);
    ok(&[
        "sample",
        "--ckpt",
        ck.to_str().unwrap(),
        "--class",
        "1",
        "--num",
        "2",
        "--steps",
        "4",
        "--out",
        g2.to_str().unwrap(),
        "--guidance-model",
        ck.to_str().unwrap(),
        "--cfg-scale",
        "1",
        "--save-latents",
        g2.join("l.safetensors").to_str().unwrap(),
    ]);
    let a = load_tensor_file(&g1.join("l.safetensors")).unwrap();
    let b = load_tensor_file(&g2.join("l.safetensors")).unwrap();
    assert_eq!(
        a.tensors.get("latents").unwrap().data,
        b.tensors.get("latents").unwrap().data
    );
}

#[test]
fn encode_decode_round_trip() {
    let rae = tiny_run().join("rae");
    let d = tmp("codec");
    let data = d.join("data");
    ok(&[
        "builtin-data",
        "--out",
        data.to_str().unwrap(),
        "--per-class",
        "2",
    ]);
    let lat = d.join("lat.safetensors");
    ok(&[
        "encode",
        "--rae",
        rae.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        lat.to_str().unwrap(),
    ]);
    let f = load_tensor_file(&lat).unwrap();
    assert_eq!(f.tensors.get("latents").unwrap().shape, vec![20, 32, 8, 8]);
    assert_eq!(f.int("labels").unwrap().data[..4], [0, 0, 1, 1]);
    ok(&[
        "decode",
        "--rae",
        rae.to_str().unwrap(),
        lat.to_str().unwrap(),
        "--out",
        d.join("dec").to_str().unwrap(),
    ]);
    assert_eq!(walk(&d.join("dec")).len(), 21);
    // Decoding the encoded latents equals reconstructing the images directly.
    let imgs: Vec<String> = walk(&data)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["reconstruct", "--rae", rae.to_str().unwrap(), "--out"];
    let rec = d.join("rec");
    args.push(rec.to_str().unwrap());
    args.extend(imgs.iter().map(String::as_str));
    let log = ok(&args);
    assert_eq!(log.matches("PSNR").count(), 20);
    // Stage 2 from the latent cache.
    let out = d.join("from-cache");
    ok(&[
        "train",
        "--stage",
        "2",
        "--rae",
        rae.to_str().unwrap(),
        "--latents",
        lat.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--sample-steps",
        "3",
    ]);
    assert!(out.join("dit-train.safetensors").exists());
}

#[test]
fn bad_inputs_fail_with_named_errors_and_no_partial_output() {
    let run_dir = tiny_run();
    let rae = run_dir.join("rae");
    let d = tmp("bad");
    let out = d.join("out");
    let o = out.to_str().unwrap();
    let r = rae.to_str().unwrap();
    // Missing and empty data folders.
    let e = fails(&[
        "train",
        "--stage",
        "2",
        "--rae",
        r,
        "--data",
        "/nonexistent/data",
        "--out",
        o,
        "--max-steps",
        "1",
    ]);
    assert!(e.contains("/nonexistent/data"), "{e}");
    let empty = d.join("empty");
    std::fs::create_dir_all(empty.join("cls")).unwrap();
    let e = fails(&[
        "train",
        "--stage",
        "2",
        "--rae",
        r,
        "--data",
        empty.to_str().unwrap(),
        "--out",
        o,
        "--max-steps",
        "1",
    ]);
    assert!(e.contains("no PNG or JPEG"), "{e}");
    // A truncated image names the file.
    let data = d.join("data");
    ok(&[
        "builtin-data",
        "--out",
        data.to_str().unwrap(),
        "--per-class",
        "1",
    ]);
    let victim = data.join("red-disk").join("00000.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&[
        "train",
        "--stage",
        "2",
        "--rae",
        r,
        "--data",
        data.to_str().unwrap(),
        "--out",
        o,
        "--max-steps",
        "1",
        "--batch-size",
        "10",
    ]);
    assert!(e.contains("00000.png"), "{e}");
    // A checkpoint of the wrong model (the decoder) or a truncated one.
    let dec = rae.join("decoder.safetensors");
    let e = fails(&["sample", "--ckpt", dec.to_str().unwrap(), "--out", o]);
    assert!(e.contains("decoder.safetensors"), "{e}");
    let ck = std::fs::read(run_dir.join("dit-train.safetensors")).unwrap();
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &ck[..ck.len() / 3]).unwrap();
    let e = fails(&["sample", "--ckpt", trunc.to_str().unwrap(), "--out", o]);
    assert!(e.contains("trunc.safetensors"), "{e}");
    // A checkpoint of another size: a tiny model trained on 5 classes against 10.
    let e = fails(&[
        "sample",
        "--ckpt",
        run_dir.join("dit-train.safetensors").to_str().unwrap(),
        "--class",
        "12",
        "--out",
        o,
    ]);
    assert!(e.contains("class 12"), "{e}");
    // Unknown backend; a backend that is not present or not built.
    let o2 = Command::new(bin())
        .args(["--backend", "tpu", "inspect", dec.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o2.status.success() && String::from_utf8_lossy(&o2.stderr).contains("tpu"));
    let o3 = Command::new(bin())
        .args(["--backend", "cuda", "sample", "--out", o])
        .output()
        .unwrap();
    let e3 = String::from_utf8_lossy(&o3.stderr);
    assert!(
        !o3.status.success() && e3.contains("cuda") && !e3.contains("panicked"),
        "{e3}"
    );
    // An unwritable output folder (a path through a regular file).
    let e = fails(&[
        "sample",
        "--ckpt",
        run_dir.join("dit-train.safetensors").to_str().unwrap(),
        "--out",
        victim.join("sub").to_str().unwrap(),
        "--steps",
        "2",
    ]);
    assert!(e.contains("00000.png"), "{e}");
    no_temp_files(&d);
    assert!(
        !out.exists()
            || walk(&out)
                .iter()
                .all(|p| !p.to_string_lossy().contains(".tmp"))
    );
}

#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_previous_one() {
    let rae = tiny_run().join("rae");
    let out = tmp("fulldisk");
    let args = |steps: &str, resume: bool| {
        let mut v = format!(
            "--backend cpu train --stage 2 --rae {} --builtin-size 200 --out {} --max-steps {steps} --ckpt-every 2 --sample-steps 3",
            rae.display(),
            out.display()
        );
        if resume {
            v.push_str(" --resume");
        }
        v
    };
    let o = Command::new(bin())
        .args(args("2", false).split(' '))
        .output()
        .unwrap();
    assert!(o.status.success());
    let ck = out.join("dit-train.safetensors");
    let before = std::fs::read(&ck).unwrap();
    // Limit file size to 64 KiB: the next checkpoint write fails mid-way like a full disk.
    // SIGXFSZ is ignored so the write returns an error instead of killing the process.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec {} {}",
        bin(),
        args("4", true)
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a failed write:\n{err}");
    assert!(
        err.contains("dit-train.safetensors") && err.contains("unchanged"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the previous checkpoint was damaged"
    );
    no_temp_files(&out);
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let rae = tiny_run().join("rae");
    let out = tmp("nan");
    // An absurd learning rate blows the weights up after the first update.
    let e = fails(&[
        "train",
        "--stage",
        "2",
        "--rae",
        rae.to_str().unwrap(),
        "--builtin-size",
        "200",
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "20",
        "--ckpt-every",
        "1",
        "--lr",
        "1e12",
        "--clip",
        "0",
        "--sample-steps",
        "3",
    ]);
    assert!(
        e.contains("not finite") && e.contains("last good checkpoint"),
        "{e}"
    );
    let ck = load_tensor_file(&out.join("dit-train.safetensors")).unwrap();
    let step: u64 = ck.meta("step").unwrap().parse().unwrap();
    assert!((1..20).contains(&step), "checkpoint at step {step}");
    assert!(e.contains(&format!("(step {step})")), "{e}");
    no_temp_files(&out);
}
