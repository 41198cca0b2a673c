//! LPIPS (§2.7.5) against the reference and the `lpips` package
//! (`tests/fixtures/gan_lpips.safetensors`, made by `tools/make_gan_fixtures.py`): a VGG-16
//! with synthetic weights (regenerated here by name, times the fixture's gain), the value,
//! the per-sample values and the gradient with respect to either image, on the CPU and on
//! WGPU (skipped without an adapter unless `RAE_REQUIRE_WGPU=1`).
//!
//! With the real LPIPS v0.1 linear weights (`lpips/weights/v0.1/vgg.pth` of the `lpips`
//! package, found through `RAE_LPIPS_V01`; skipped when unset unless `RAE_REQUIRE_LPIPS=1`)
//! the value equals the package's own within 1e-5.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use rae_cli::store::load_tensor_file;
use rae_core::gan::lpips::{Lpips, VggConfig};
use rae_core::nn::{HostTensor, HostTensors};
use rae_core::safetensors::SafeTensors;
use rae_core::{Backend, CpuBackend, Tensor};
use rae_tests::conformance::wgpu_or_skip;
use rae_tests::synthetic::synthetic_vgg;
use rae_tests::util::{fixture, max_abs};

const FIXTURE: &str = "gan_lpips.safetensors";

fn host(f: &SafeTensors, name: &str) -> HostTensor {
    HostTensor::new(
        f.tensor(name).unwrap().shape.clone(),
        f.read_f32(name).unwrap(),
    )
    .unwrap()
}

fn upload<B: Backend>(b: &B, f: &SafeTensors, name: &str) -> Tensor<B> {
    let t = host(f, name);
    b.upload(&t.data, &t.shape).unwrap()
}

/// Max abs error of `got` against `want`, relative to `want`'s largest magnitude.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-30);
    max_abs(got, want) / scale
}

/// Runs LPIPS with `lins` on the fixture's images and checks `prefix`'s value, per-sample
/// values and `dx1` (and `dx0` when present). Returns the worst errors (value abs, grad rel).
fn check<B: Backend>(
    b: &B,
    f: &SafeTensors,
    lins: &HostTensors,
    prefix: &str,
    tol: f64,
) -> (f64, f64) {
    let gain = f.read_f32("vgg_gain").unwrap()[0];
    let mut lp = Lpips::new(b, &VggConfig::vgg16()).unwrap();
    lp.load(b, &synthetic_vgg(&VggConfig::vgg16(), gain).unwrap(), lins)
        .unwrap();
    let (x0, x1) = (upload(b, f, "x0"), upload(b, f, "x1"));
    let (v, saved) = lp.forward(b, &x0, &x1, true).unwrap();
    let want = f.read_f32(&format!("{prefix}value")).unwrap()[0];
    let verr = (v.mean - want).abs() as f64;
    let perr = max_abs(
        &v.per_sample,
        &f.read_f32(&format!("{prefix}per_sample")).unwrap(),
    );
    eprintln!(
        "{} {prefix}value {} vs {want}: err {verr:.3e}, per-sample {perr:.3e}",
        b.name(),
        v.mean
    );
    assert!(
        verr.max(perr) <= tol,
        "{} {prefix}value error {verr:.3e} / {perr:.3e}",
        b.name()
    );
    let dx1 = b
        .download(&lp.backward(b, &saved.unwrap(), 1.0).unwrap())
        .unwrap();
    let gerr = rel(&dx1, &f.read_f32(&format!("{prefix}dx1")).unwrap());
    eprintln!(
        "{} {prefix}dx1: max error {gerr:.3e} of the largest",
        b.name()
    );
    assert!(gerr <= 1e-3, "{} {prefix}dx1 error {gerr:.3e}", b.name());
    let mut worst_g = gerr;
    if f.tensor(&format!("{prefix}dx0")).is_ok() {
        // LPIPS is symmetric: the gradient for x0 is the backward with the images swapped.
        let (_, s0) = lp.forward(b, &x1, &x0, true).unwrap();
        let dx0 = b
            .download(&lp.backward(b, &s0.unwrap(), 1.0).unwrap())
            .unwrap();
        let e = rel(&dx0, &f.read_f32(&format!("{prefix}dx0")).unwrap());
        eprintln!("{} {prefix}dx0: max error {e:.3e} of the largest", b.name());
        assert!(e <= 1e-3);
        worst_g = worst_g.max(e);
    }
    (verr.max(perr), worst_g)
}

fn reference_lins(f: &SafeTensors) -> HostTensors {
    let mut lins = HostTensors::new();
    for k in 0..5 {
        lins.insert(
            format!("lin{k}.model.1.weight"),
            host(f, &format!("lin{k}.weight")),
        );
    }
    lins
}

#[test]
fn lpips_matches_the_reference_on_cpu() {
    let bytes = fixture(FIXTURE);
    let f = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    check(&CpuBackend::new(), &f, &reference_lins(&f), "", 1e-5);
}

#[test]
fn lpips_matches_the_reference_on_wgpu() {
    let Some(b) = wgpu_or_skip() else { return };
    let bytes = fixture(FIXTURE);
    let f = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    check(b, &f, &reference_lins(&f), "", 1e-4);
}

/// The `lpips` package's `vgg.pth`: `RAE_LPIPS_V01` (the file, or the package folder).
fn v01_weights() -> Option<PathBuf> {
    let required = std::env::var("RAE_REQUIRE_LPIPS").is_ok_and(|v| v == "1");
    let found = std::env::var_os("RAE_LPIPS_V01")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_dir() {
                p.join("weights/v0.1/vgg.pth")
            } else {
                p
            }
        });
    match found {
        Some(p) if p.is_file() => Some(p),
        _ if required => panic!("RAE_REQUIRE_LPIPS=1 but RAE_LPIPS_V01 names no vgg.pth"),
        _ => {
            eprintln!("skipped: set RAE_LPIPS_V01 to the lpips package's weights/v0.1/vgg.pth");
            None
        }
    }
}

#[test]
fn lpips_with_the_real_v01_weights_matches_the_lpips_package() {
    let Some(path) = v01_weights() else { return };
    let lins = load_tensor_file(&path).unwrap().tensors;
    let bytes = fixture(FIXTURE);
    let f = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    check(&CpuBackend::new(), &f, &lins, "real.", 1e-5);
}
