//! Inception metrics computed on the fly: `sample --eval-ref` (images pushed batch by batch
//! into an `Accumulator`) gives exactly the metrics of `eval` on the written PNGs, and
//! `eval DIR --reconstruct --inception` (the rFID path) reports fid, psnr and ssim together.
//! Library-level tests use a small fake extractor; one CLI test runs the real Inception-v3
//! (made-up weights) on a few samples of a tiny model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{ok, tmp};
use rae_cli::commands::eval::inception::{
    evaluate_inception, parse_metrics, Accumulator, FeatureDims, Features, InceptionOut,
};
use rae_cli::commands::eval::list_images;
use rae_cli::commands::eval::rfid::evaluate_rfid;
use rae_cli::commands::eval::samples::{finish_against, push_images};
use rae_cli::commands::tools::export_builtin;
use rae_cli::image_io::load_rgb;
use rae_cli::CliResult;
use rae_core::json::JsonValue;
use rae_core::CpuBackend;

/// Per-image colour moments as features: pool 6, logits 4, spatial 3.
#[derive(Debug, Default)]
struct Moments6;

impl Features for Moments6 {
    fn dims(&self) -> FeatureDims {
        FeatureDims {
            pool: 6,
            logits: 4,
            spatial: 3,
        }
    }
    fn extract(&mut self, px: &[u8], n: usize, h: usize, w: usize) -> CliResult<InceptionOut> {
        let mut out = InceptionOut::default();
        for img in px.chunks_exact(h * w * 3).take(n) {
            let mut f = [0.0f32; 6];
            for p in img.chunks_exact(3) {
                for c in 0..3 {
                    let v = p[c] as f32 / 255.0;
                    f[c] += v;
                    f[3 + c] += v * v;
                }
            }
            f.iter_mut().for_each(|v| *v /= (h * w) as f32);
            out.pool.extend_from_slice(&f);
            out.logits
                .extend([f[0] * 3.0, f[1] * 2.0, f[2] - f[3], f[4] + f[5]]);
            out.spatial.extend([f[0] + f[3], f[1] * f[4], f[2] - 0.5]);
        }
        Ok(out)
    }
}

fn num(out: &[(String, JsonValue)], k: &str) -> f64 {
    match out.iter().find(|(n, _)| n == k) {
        Some((_, JsonValue::Number(v))) => *v,
        other => panic!("{k}: {other:?} in {out:?}"),
    }
}

fn has(out: &[(String, JsonValue)], k: &str) -> bool {
    out.iter().any(|(n, _)| n == k)
}

#[test]
fn streamed_images_score_exactly_as_the_folder() {
    let root = tmp("stream-lib");
    let (a, r) = (root.join("a"), root.join("r"));
    export_builtin(&a, 2, 16).unwrap();
    export_builtin(&r, 3, 16).unwrap();
    let m = parse_metrics("fid,sfid,is,kid,prec,recall").unwrap();
    let mut fx = Moments6;
    let by_folder = evaluate_inception(&mut fx, &a, Some(&r), &m, 16, 4, None).unwrap();
    let imgs: Vec<_> = list_images(&a)
        .unwrap()
        .iter()
        .map(|p| load_rgb(p).unwrap())
        .collect();
    let mut acc = Accumulator::new(fx.dims());
    push_images(&mut fx, &mut acc, &imgs, 4).unwrap();
    assert_eq!(acc.count(), 20);
    let streamed = finish_against(&mut fx, acc, &r, &m, 16, 4).unwrap();
    for k in [
        "fid",
        "sfid",
        "is",
        "is_std",
        "kid",
        "precision",
        "recall",
        "count",
    ] {
        assert_eq!(num(&by_folder, k), num(&streamed, k), "{k}");
    }
    // Too few images is a named error.
    let mut acc = Accumulator::new(fx.dims());
    push_images(&mut fx, &mut acc, &imgs[..1], 4).unwrap();
    let e = finish_against(&mut fx, acc, &r, &m, 16, 4).unwrap_err();
    assert!(e.to_string().contains("at least 2 images"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn rfid_reports_fid_psnr_and_ssim_together() {
    let b = CpuBackend::new();
    let rae = common::tiny_rae(&b, 16, 4, 4);
    let root = tmp("stream-rfid");
    export_builtin(&root, 1, 16).unwrap();
    let m = parse_metrics("fid,is,psnr,ssim").unwrap();
    let out = evaluate_rfid(&b, &rae, &mut Moments6, &root, &m, 16, 4).unwrap();
    for k in [
        "fid",
        "is",
        "psnr_db",
        "ssim",
        "count",
        "reference",
        "pairing",
    ] {
        assert!(has(&out, k), "{k}: {out:?}");
    }
    assert!(num(&out, "fid").is_finite() && num(&out, "fid") >= -1e-9);
    assert_eq!(num(&out, "count"), 10.0);
    let JsonValue::Object(ps) = &out.iter().find(|(k, _)| k == "psnr_db").unwrap().1 else {
        panic!("{out:?}")
    };
    assert!(ps.iter().any(|(k, _)| k == "mean"), "{ps:?}");
    // psnr/ssim alone need no Inception pass.
    let m = parse_metrics("psnr").unwrap();
    let out = evaluate_rfid(&b, &rae, &mut Moments6, &root, &m, 16, 4).unwrap();
    assert!(has(&out, "psnr_db") && !has(&out, "fid") && !has(&out, "ssim"));
    std::fs::remove_dir_all(&root).ok();
}

fn read_json(p: &Path) -> JsonValue {
    rae_core::json::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Made-up Inception-v3 weights in the pretrained layout (varied, small).
fn inception_weights(path: &Path) {
    use rae_core::nn::{HostTensor, HostTensors};
    let mut t = HostTensors::new();
    for (k, (name, shape)) in rae_core::models::inception::checkpoint_layout()
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            vec![1.0; n]
        } else if name.ends_with("weight") {
            (0..n)
                .map(|i| 0.05 * ((i * 7 + k * 13) as f32 * 0.37).sin())
                .collect()
        } else {
            vec![0.0; n]
        };
        t.insert(name.to_string(), HostTensor::new(shape, v).unwrap());
    }
    rae_cli::store::save_safetensors(path, &t, &[]).unwrap();
}

#[test]
fn sample_eval_ref_equals_eval_on_the_written_pngs() {
    let root = tmp("stream-cli");
    let run = root.join("run");
    ok(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--stage1-steps",
        "2",
        "--max-steps",
        "2",
        "--builtin-size",
        "40",
        "--sample-steps",
        "2",
    ]);
    let w = root.join("inception.safetensors");
    inception_weights(&w);
    let refdir = root.join("ref");
    export_builtin(&refdir, 1, 32).unwrap();
    let (out, j1, j2) = (root.join("s"), root.join("s.json"), root.join("e.json"));
    let ckpt = run.join("dit-train.safetensors");
    let m = "is,prec,recall";
    let log = ok(&[
        "sample",
        "--ckpt",
        ckpt.to_str().unwrap(),
        "--classes",
        "0,1",
        "--num",
        "2",
        "--steps",
        "2",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--eval-ref",
        refdir.to_str().unwrap(),
        "--inception",
        w.to_str().unwrap(),
        "--metrics",
        m,
        "--eval-json",
        j1.to_str().unwrap(),
    ]);
    assert!(log.contains("precision"), "{log}");
    let img = load_rgb(&out.join("000000-class0.png")).unwrap();
    let size = img.height().to_string();
    std::fs::remove_file(out.join("grid.png")).unwrap();
    ok(&[
        "eval",
        out.to_str().unwrap(),
        "--inception",
        w.to_str().unwrap(),
        "--metrics",
        m,
        "--ref",
        refdir.to_str().unwrap(),
        "--image-size",
        &size,
        "--json",
        j2.to_str().unwrap(),
    ]);
    let (a, b) = (read_json(&j1), read_json(&j2));
    for k in ["is", "is_std", "precision", "recall", "count"] {
        assert_eq!(a.get(k), b.get(k), "{k}: {a:?} vs {b:?}");
        assert!(a.get(k).is_some(), "{k}");
    }
    // --no-save writes no images but still scores.
    let out2 = root.join("s2");
    ok(&[
        "sample",
        "--ckpt",
        ckpt.to_str().unwrap(),
        "--classes",
        "0,1",
        "--num",
        "1",
        "--steps",
        "2",
        "--seed",
        "5",
        "--out",
        out2.to_str().unwrap(),
        "--no-save",
        "--eval-ref",
        refdir.to_str().unwrap(),
        "--inception",
        w.to_str().unwrap(),
        "--metrics",
        "is",
    ]);
    assert!(!out2.join("grid.png").exists());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn missing_inception_is_the_named_error() {
    let root = tmp("stream-missing");
    let e = common::fails(&[
        "eval",
        root.to_str().unwrap(),
        "--reconstruct",
        "--metrics",
        "fid,psnr",
    ]);
    assert!(e.contains("--inception"), "{e}");
    let e = common::fails(&["sample", "--eval-ref", root.to_str().unwrap()]);
    assert!(e.contains("--inception") || e.contains("checkpoint"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}
