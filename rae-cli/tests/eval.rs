//! `rae-cli eval`: the Fréchet distance of a set with itself is zero and grows as a copy is
//! perturbed; reconstruction scores pair files by name or by order (and refuse sets that
//! cannot be paired); the binary prints the results and writes parseable JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, tiny_rae, tmp, write_rae_dir};
use rae_cli::cli::EvalArgs;
use rae_cli::cli::RaeArgs;
use rae_cli::commands::eval::{evaluate, list_images, Pairing};
use rae_cli::commands::tools::export_builtin;
use rae_core::json::parse_named;
use rae_core::rng::PhiloxStream;
use rae_core::CpuBackend;

fn args(images: &Path, reference: Option<&Path>, reconstruct: bool) -> EvalArgs {
    EvalArgs {
        rae: RaeArgs::default(),
        images: images.to_path_buf(),
        reference: reference.map(Path::to_path_buf),
        reconstruct,
        image_size: None,
        batch_size: 7,
        json: None,
        metrics: None,
        reference_stats: None,
        inception: None,
        save_stats: None,
    }
}

/// A copy of every image under `from` at the same relative path under `to`, with `f`
/// applied to each pixel value (0..=255) of channel `c`.
fn perturbed_copy(from: &Path, to: &Path, f: &dyn Fn(u8, usize, &mut PhiloxStream) -> u8) {
    let mut rng = PhiloxStream::new(3, 3);
    for p in list_images(from).unwrap() {
        let mut img = image::open(&p).unwrap().to_rgb8();
        for px in img.pixels_mut() {
            for c in 0..3 {
                px[c] = f(px[c], c, &mut rng);
            }
        }
        let out = to.join(p.strip_prefix(from).unwrap());
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        img.save(&out).unwrap();
    }
}

fn noise(sigma: f32) -> impl Fn(u8, usize, &mut PhiloxStream) -> u8 {
    move |v, _, rng| (v as f32 + sigma * rng.normal()).round().clamp(0.0, 255.0) as u8
}

struct Setup {
    dir: PathBuf,
    data: PathBuf,
    rae: rae_core::models::Rae<CpuBackend>,
}

fn setup(name: &str) -> Setup {
    let b = CpuBackend::new();
    let dir = tmp(name);
    let data = dir.join("data");
    export_builtin(&data, 3, 16).unwrap();
    Setup {
        dir,
        data,
        rae: tiny_rae(&b, 16, 4, 4),
    }
}

#[test]
fn fd_is_zero_for_a_set_and_itself_and_grows_with_perturbation() {
    let b = CpuBackend::new();
    let s = setup("eval-fd");
    let same = evaluate(&b, &s.rae, &args(&s.data, Some(&s.data), false)).unwrap();
    assert_eq!(
        (same.count, same.reference_count, same.feature_dim),
        (30, 30, 16)
    );
    assert!(
        same.fd.abs() <= 1e-6,
        "FD of a set with itself: {}",
        same.fd
    );
    assert!(same.psnr.is_none() && same.pairing.is_none());
    // Colour-shifted copies (red +60).
    let shifted = s.dir.join("shifted");
    perturbed_copy(&s.data, &shifted, &|v, c, _| {
        if c == 0 {
            v.saturating_add(60)
        } else {
            v
        }
    });
    let fd_shift = evaluate(&b, &s.rae, &args(&shifted, Some(&s.data), false))
        .unwrap()
        .fd;
    assert!(fd_shift > 1e-3, "colour shift: FD {fd_shift}");
    // Noised copies: the distance grows with the noise level.
    let mut last = 0.0;
    for sigma in [4.0f32, 16.0, 64.0] {
        let noisy = s.dir.join(format!("noise{sigma}"));
        perturbed_copy(&s.data, &noisy, &noise(sigma));
        let fd = evaluate(&b, &s.rae, &args(&noisy, Some(&s.data), false))
            .unwrap()
            .fd;
        eprintln!("noise σ = {sigma}: FD {fd:.6}");
        assert!(fd > last, "σ = {sigma}: FD {fd} did not grow past {last}");
        last = fd;
    }
    // FD is symmetric.
    let ab = evaluate(&b, &s.rae, &args(&shifted, Some(&s.data), false))
        .unwrap()
        .fd;
    let ba = evaluate(&b, &s.rae, &args(&s.data, Some(&shifted), false))
        .unwrap()
        .fd;
    assert!((ab - ba).abs() <= 1e-7 * ab.abs().max(1.0), "{ab} vs {ba}");
}

#[test]
fn reconstruction_scores_pair_by_name_or_order() {
    let b = CpuBackend::new();
    let s = setup("eval-pairs");
    // Identical sets, same names: infinite PSNR, SSIM 1.
    let r = evaluate(&b, &s.rae, &args(&s.data, Some(&s.data), true)).unwrap();
    assert_eq!(r.pairing, Some(Pairing::Name));
    let (p, q) = (r.psnr.unwrap(), r.ssim.unwrap());
    assert!(
        p.mean.is_infinite() && (q.mean - 1.0).abs() < 1e-9,
        "{p:?} {q:?}"
    );
    // Noised copies under other names (flattened, renamed): paired by order, and PSNR
    // falls as the noise grows.
    let mut psnr_prev = f64::INFINITY;
    for sigma in [3.0f32, 12.0] {
        let noisy = s.dir.join(format!("n{sigma}"));
        perturbed_copy(&s.data, &noisy, &noise(sigma));
        let flat = s.dir.join(format!("flat{sigma}"));
        std::fs::create_dir_all(&flat).unwrap();
        for (i, p) in list_images(&noisy).unwrap().iter().enumerate() {
            std::fs::copy(p, flat.join(format!("img{i:03}.png"))).unwrap();
        }
        let by_name = evaluate(&b, &s.rae, &args(&noisy, Some(&s.data), true)).unwrap();
        let by_order = evaluate(&b, &s.rae, &args(&flat, Some(&s.data), true)).unwrap();
        assert_eq!(by_name.pairing, Some(Pairing::Name));
        assert_eq!(by_order.pairing, Some(Pairing::Order));
        // Sorted order of data/<class>/<i>.png equals the renamed order: same scores.
        assert_eq!(by_name.psnr, by_order.psnr);
        let p = by_name.psnr.unwrap().mean;
        assert!(p < psnr_prev && p.is_finite(), "σ {sigma}: PSNR {p}");
        psnr_prev = p;
    }
    // Sets that cannot be paired.
    let few = s.dir.join("few");
    std::fs::create_dir_all(&few).unwrap();
    for (i, p) in list_images(&s.data).unwrap().iter().take(5).enumerate() {
        std::fs::copy(p, few.join(format!("x{i}.png"))).unwrap();
    }
    let e = evaluate(&b, &s.rae, &args(&few, Some(&s.data), true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 images") && e.contains("30"), "{e}");
    // Without a reference: reconstructions through the RAE, scored like `reconstruct`.
    let r = evaluate(&b, &s.rae, &args(&few, None, true)).unwrap();
    assert_eq!(r.pairing, Some(Pairing::Reconstructed));
    assert_eq!(r.reference_count, 5);
    assert!(r.psnr.unwrap().mean.is_finite() && r.fd.is_finite());
    let e = evaluate(&b, &s.rae, &args(&few, None, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--reconstruct"), "{e}");
}

#[test]
fn the_command_prints_results_and_writes_json() {
    let b = CpuBackend::new();
    let s = setup("eval-cmd");
    let rae_dir = s.dir.join("rae");
    write_rae_dir(&b, &s.rae, &rae_dir, false);
    let shifted = s.dir.join("shifted");
    perturbed_copy(&s.data, &shifted, &|v, c, _| {
        if c == 2 {
            v / 2
        } else {
            v
        }
    });
    let json = s.dir.join("out").join("eval.json");
    let o = common::run(&[
        "eval",
        "--rae",
        rae_dir.to_str().unwrap(),
        shifted.to_str().unwrap(),
        s.data.to_str().unwrap(),
        "--reconstruct",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("FD (RAE") && stdout.contains("PSNR") && stdout.contains("SSIM"));
    let v = parse_named(&std::fs::read_to_string(&json).unwrap(), "eval.json").unwrap();
    let fd = v.get("fd").unwrap().as_f64().unwrap();
    let direct = evaluate(&b, &s.rae, &args(&shifted, Some(&s.data), true)).unwrap();
    assert!(
        (fd - direct.fd).abs() <= 1e-9 * direct.fd.max(1.0),
        "{fd} vs {}",
        direct.fd
    );
    assert_eq!(v.get("count").unwrap().as_usize(), Some(30));
    assert_eq!(v.get("pairing").unwrap().as_str(), Some("name"));
    let p = v
        .get("psnr_db")
        .unwrap()
        .get("mean")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!((p - direct.psnr.unwrap().mean).abs() < 1e-9);
    // Identical sets: an infinite PSNR is written as null, not as invalid JSON.
    let json2 = s.dir.join("same.json");
    ok(&[
        "eval",
        "--rae",
        rae_dir.to_str().unwrap(),
        s.data.to_str().unwrap(),
        s.data.to_str().unwrap(),
        "--reconstruct",
        "--json",
        json2.to_str().unwrap(),
    ]);
    let v2 = parse_named(&std::fs::read_to_string(&json2).unwrap(), "same.json").unwrap();
    assert!(v2.get("psnr_db").unwrap().get("mean").unwrap().is_null());
    // A missing folder is named.
    let e = fails(&[
        "eval",
        "--rae",
        rae_dir.to_str().unwrap(),
        "/nonexistent/samples",
        s.data.to_str().unwrap(),
    ]);
    assert!(e.contains("/nonexistent/samples"), "{e}");
}
