//! `eval --metrics fid,is,sfid,kid,prec,recall` plumbing with a fake Inception extractor
//! (features are simple functions of the pixels): folders, an ADM-style `.npz` reference,
//! `--save-stats` files read back as a reference, and the metric values against the
//! rae-core functions on the same features.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rae_cli::commands::eval::inception::{
    evaluate_inception, missing_inception, parse_metrics, FeatureDims, Features, InceptionOut,
    Metric, INCEPTION_FILE,
};
use rae_cli::commands::tools::export_builtin;
use rae_cli::store::{load_eval_stats, Npz};
use rae_cli::CliResult;
use rae_core::json::JsonValue;

/// Pool 8, logits 5, spatial 5 (the widths of the `adm_ref.npz` fixture's statistics).
#[derive(Debug, Default)]
struct Fake {
    calls: usize,
}

impl Features for Fake {
    fn dims(&self) -> FeatureDims {
        FeatureDims {
            pool: 8,
            logits: 5,
            spatial: 5,
        }
    }
    fn extract(&mut self, px: &[u8], n: usize, h: usize, w: usize) -> CliResult<InceptionOut> {
        self.calls += 1;
        let per = h * w * 3;
        let mut out = InceptionOut::default();
        for i in 0..n {
            let img = &px[i * per..(i + 1) * per];
            let ch = |c: usize, f: &dyn Fn(f32) -> f32| {
                img.iter()
                    .skip(c)
                    .step_by(3)
                    .map(|&v| f(v as f32 / 255.0))
                    .sum::<f32>()
                    / (h * w) as f32
            };
            let f = [
                ch(0, &|v| v),
                ch(1, &|v| v),
                ch(2, &|v| v),
                ch(0, &|v| v * v),
                ch(1, &|v| v * v),
                ch(2, &|v| v * v),
                ch(0, &|v| (v * 6.0).sin()),
                ch(2, &|v| (v * 5.0).cos()),
            ];
            out.pool.extend_from_slice(&f);
            out.logits.extend(f[..5].iter().map(|v| v * 4.0));
            out.spatial.extend(f[3..].iter().map(|v| v * 2.0 - 0.5));
        }
        Ok(out)
    }
}

fn get(out: &[(String, JsonValue)], k: &str) -> f64 {
    match out.iter().find(|(n, _)| n == k) {
        Some((_, JsonValue::Number(v))) => *v,
        other => panic!("{k}: {other:?} in {out:?}"),
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rae-evalinc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/npz")
        .join(name)
}

#[test]
fn metrics_parse_and_need_inception() {
    let m = parse_metrics("fid, is,sfid,kid,prec,recall,rae-fd,psnr,ssim,fid").unwrap();
    assert_eq!(m.len(), 9);
    assert!(parse_metrics("fid,bogus").is_err());
    assert!(parse_metrics("").is_err());
    let err = missing_inception(&[Metric::Fid]).to_string();
    assert!(
        err.contains("--inception") && err.contains(INCEPTION_FILE),
        "{err}"
    );
    assert!(!Metric::RaeFd.needs_inception());
}

#[test]
fn folders_and_saved_stats() {
    let root = temp("folders");
    let (a, b) = (root.join("a"), root.join("b"));
    export_builtin(&a, 2, 16).unwrap();
    export_builtin(&b, 3, 16).unwrap();
    let all = parse_metrics("fid,is,sfid,kid,prec,recall").unwrap();
    let stats = root.join("b.safetensors");
    let mut fx = Fake::default();
    // Save b's statistics, then score a against b's folder and against the saved file.
    evaluate_inception(
        &mut fx,
        &b,
        None,
        &parse_metrics("is").unwrap(),
        16,
        4,
        Some(&stats),
    )
    .unwrap();
    let saved = load_eval_stats(&stats).unwrap();
    assert_eq!(saved.count, 30);
    assert_eq!(saved.pool_features.as_ref().unwrap().len(), 30 * 8);
    let by_folder = evaluate_inception(&mut fx, &a, Some(&b), &all, 16, 4, None).unwrap();
    let by_stats = evaluate_inception(&mut fx, &a, Some(&stats), &all, 16, 5, None).unwrap();
    for k in ["fid", "sfid", "is", "kid", "precision", "recall"] {
        let (x, y) = (get(&by_folder, k), get(&by_stats, k));
        assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{k}: {x} vs {y}");
    }
    assert_eq!(get(&by_folder, "count"), 20.0);
    let fid = get(&by_folder, "fid");
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    let p = get(&by_folder, "precision");
    assert!((0.0..=1.0).contains(&p));
    // Against itself: FID ≈ 0, precision = recall = 1.
    let same = evaluate_inception(&mut fx, &a, Some(&a), &all, 16, 3, None).unwrap();
    assert!(get(&same, "fid").abs() < 1e-6, "{same:?}");
    assert_eq!((get(&same, "precision"), get(&same, "recall")), (1.0, 1.0));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn npz_reference_and_samples() {
    let root = temp("npz");
    let a = root.join("a");
    export_builtin(&a, 2, 16).unwrap();
    let adm = fixture("adm_ref.npz");
    let mut fx = Fake::default();
    let m = parse_metrics("fid,sfid").unwrap();
    let out = evaluate_inception(&mut fx, &a, Some(&adm), &m, 16, 8, None).unwrap();
    // The npz's precomputed mu/sigma are used: compare with the formula on them.
    let npz = Npz::open(&adm).unwrap();
    let g = |m: &str, s: &str| rae_core::metrics::GaussianStats {
        mu: npz.require(m).unwrap().to_f64(),
        sigma: npz.require(s).unwrap().to_f64(),
    };
    let own = evaluate_inception(&mut fx, &a, None, &[], 16, 8, Some(&root.join("s.st"))).unwrap();
    assert_eq!(get(&own, "count"), 20.0);
    let mine = load_eval_stats(&root.join("s.st")).unwrap();
    let want = mine.pool.frechet_distance(&g("mu", "sigma")).unwrap();
    assert!((get(&out, "fid") - want).abs() < 1e-9, "{out:?}");
    let want = mine
        .spatial
        .unwrap()
        .frechet_distance(&g("mu_s", "sigma_s"))
        .unwrap();
    assert!((get(&out, "sfid") - want).abs() < 1e-9);
    // Samples from an npz's arr_0 (2 images of 8×8): IS flows, FID against itself is 0.
    let out = evaluate_inception(&mut fx, &adm, None, &[Metric::Is], 8, 1, None).unwrap();
    assert_eq!(get(&out, "count"), 2.0);
    assert!(get(&out, "is") >= 1.0);
    // Metrics against a reference need one.
    assert!(evaluate_inception(&mut fx, &a, None, &m, 16, 8, None).is_err());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn missing_reference_file_is_an_error() {
    let mut fx = Fake::default();
    let m = parse_metrics("fid").unwrap();
    let err = evaluate_inception(
        &mut fx,
        Path::new("/nonexistent/samples"),
        Some(Path::new("/nonexistent/ref.npz")),
        &m,
        16,
        8,
        None,
    );
    assert!(err.is_err());
}
