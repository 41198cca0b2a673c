//! The ops of the stage-1 discriminator against PyTorch (`tests/fixtures/gan_ops.safetensors`,
//! made by `tools/make_gan_fixtures.py`): bilinear resize (`align_corners=False`, no
//! antialias) and its input gradient, 1-D convolution with circular padding (k = 9, 1, and
//! a padding as long as the sequence) with input, weight and bias gradients, and
//! LeakyReLU(0.2), on the CPU and on WGPU (skipped without an adapter unless
//! `RAE_REQUIRE_WGPU=1`). Values within 1e-5 abs, gradients within 1e-4 abs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::{Backend, Unary};
use rae_core::nn::{conv1d_circular, conv1d_circular_backward, Bilinear};
use rae_core::safetensors::SafeTensors;
use rae_core::{CpuBackend, Tensor};
use rae_tests::conformance::wgpu_or_skip;
use rae_tests::util::{fixture, max_abs};

const FIXTURE: &str = "gan_ops.safetensors";

fn load<B: Backend>(b: &B, f: &SafeTensors, name: &str) -> Tensor<B> {
    let t = f.tensor(name).unwrap();
    b.upload(&f.read_f32(name).unwrap(), &t.shape).unwrap()
}

fn cmp<B: Backend>(b: &B, f: &SafeTensors, name: &str, got: &Tensor<B>, tol: f64) -> f64 {
    let want = f.tensor(name).unwrap();
    assert_eq!(got.dims(), &want.shape[..], "{} {name}: shape", b.name());
    let err = max_abs(&b.download(got).unwrap(), &f.read_f32(name).unwrap());
    eprintln!("{} {name}: max abs error {err:.3e}", b.name());
    assert!(err <= tol, "{} {name}: max abs error {err:.3e}", b.name());
    err
}

fn run<B: Backend>(b: &B) -> f64 {
    let bytes = fixture(FIXTURE);
    let f = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    let mut worst = 0.0f64;
    for case in ["resize_down", "resize_up", "resize_224"] {
        let x = load(b, &f, &format!("{case}.x"));
        let yd = f.tensor(&format!("{case}.y")).unwrap().shape.clone();
        let (xd, h, w) = (x.dims().to_vec(), yd[2], yd[3]);
        let r = Bilinear::new(b, (xd[2], xd[3]), (h, w)).unwrap();
        let y = r.forward(b, &x).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.y"), &y, 1e-5));
        let dx = r.backward(b, &load(b, &f, &format!("{case}.dy"))).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &dx, 1e-4));
    }
    for case in ["conv1d_k9", "conv1d_k1", "conv1d_k9_short"] {
        let x = load(b, &f, &format!("{case}.x"));
        let w = load(b, &f, &format!("{case}.weight"));
        let bias = load(b, &f, &format!("{case}.bias"));
        let y = conv1d_circular(b, &x, &w, Some(&bias)).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.y"), &y, 1e-5));
        let g =
            conv1d_circular_backward(b, &x, &w, true, &load(b, &f, &format!("{case}.dy"))).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &g.dx, 1e-4));
        worst = worst.max(cmp(b, &f, &format!("{case}.dweight"), &g.dweight, 1e-4));
        worst = worst.max(cmp(
            b,
            &f,
            &format!("{case}.dbias"),
            &g.dbias.unwrap(),
            1e-4,
        ));
    }
    let x = load(b, &f, "leaky.x");
    worst = worst.max(cmp(
        b,
        &f,
        "leaky.y",
        &b.unary(Unary::LeakyRelu, &x).unwrap(),
        0.0,
    ));
    let dx = b
        .unary_backward(Unary::LeakyRelu, &x, &load(b, &f, "leaky.dy"))
        .unwrap();
    worst.max(cmp(b, &f, "leaky.dx", &dx, 1e-7))
}

#[test]
fn gan_ops_match_pytorch_on_cpu() {
    let w = run(&CpuBackend::new());
    eprintln!("cpu: worst error vs PyTorch {w:.3e}");
}

#[test]
fn gan_ops_match_pytorch_on_wgpu() {
    if let Some(b) = wgpu_or_skip() {
        let w = run(b);
        eprintln!("wgpu: worst error vs PyTorch {w:.3e}");
    }
}

#[test]
fn circular_padding_longer_than_the_sequence_is_a_clear_error() {
    let b = CpuBackend::new();
    let x = b.zeros(&[1, 2, 3]).unwrap();
    let w = b.zeros(&[1, 2, 9]).unwrap();
    let e = conv1d_circular(&b, &x, &w, None).unwrap_err().to_string();
    assert!(e.contains("circular padding 4 exceeds the length 3"), "{e}");
    let even = b.zeros(&[1, 2, 2]).unwrap();
    assert!(conv1d_circular(&b, &x, &even, None).is_err());
}
