//! `Conv2d` and both poolings against PyTorch (`tests/fixtures/conv_io.safetensors`, made by
//! `tools/make_conv_fixtures.py`): outputs and input/weight/bias gradients of `F.conv2d`
//! (stride 2 with padding (0, 3), and a 7×1 window with padding (3, 0)), `F.max_pool2d(3,
//! stride=2)` and `F.avg_pool2d(3, 1, 1, count_include_pad=False)`, on the CPU and on WGPU
//! (skipped without an adapter unless `RAE_REQUIRE_WGPU=1`), each within 1e-4.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::{Backend, Pool2d, Window2d};
use rae_core::nn::{max_pool2d, Conv2d, Grads, Param};
use rae_core::safetensors::SafeTensors;
use rae_core::{CpuBackend, Tensor};
use rae_tests::conformance::wgpu_or_skip;
use rae_tests::util::{fixture, max_abs};

const TOL: f64 = 1e-4;

fn load<B: Backend>(b: &B, f: &SafeTensors, name: &str) -> Tensor<B> {
    let t = f.tensor(name).unwrap();
    b.upload(&f.read_f32(name).unwrap(), &t.shape).unwrap()
}

/// Compares `got` with the fixture's `name`; returns the max abs error.
fn cmp<B: Backend>(b: &B, f: &SafeTensors, name: &str, got: &Tensor<B>) -> f64 {
    let want = f.tensor(name).unwrap();
    assert_eq!(got.dims(), &want.shape[..], "{} {name}: shape", b.name());
    let err = max_abs(&b.download(got).unwrap(), &f.read_f32(name).unwrap());
    eprintln!("{} {name}: max abs error {err:.3e}", b.name());
    assert!(err <= TOL, "{} {name}: max abs error {err:.3e}", b.name());
    err
}

fn run<B: Backend>(b: &B) -> f64 {
    let bytes = fixture("conv_io.safetensors");
    let f = SafeTensors::parse(&bytes, "conv_io.safetensors").unwrap();
    let mut worst = 0.0f64;
    for (case, stride, padding) in [("conv_a", (2, 2), (0, 3)), ("conv_b", (1, 1), (3, 0))] {
        let conv = Conv2d {
            weight: Param::new("c.weight", load(b, &f, &format!("{case}.weight"))),
            bias: Some(Param::new("c.bias", load(b, &f, &format!("{case}.bias")))),
            stride,
            padding,
        };
        let x = load(b, &f, &format!("{case}.x"));
        let y = conv.forward(b, &x).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.y"), &y));
        let mut grads = Grads::new();
        let dx = conv
            .backward(b, &x, &load(b, &f, &format!("{case}.g")), &mut grads)
            .unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &dx));
        let dw = grads.get("c.weight").unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dweight"), dw));
        let db = grads.get("c.bias").unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dbias"), db));
    }
    for (case, k, s, p, kind) in [
        ("maxpool", 3, 2, 0, Pool2d::Max),
        ("avgpool", 3, 1, 1, Pool2d::Avg { count_pad: false }),
    ] {
        let x = load(b, &f, &format!("{case}.x"));
        let g = Window2d::nchw("test", x.dims(), (k, k), (s, s), (p, p)).unwrap();
        let y = match kind {
            Pool2d::Max => max_pool2d(b, &x, (k, k), (s, s), (p, p)).unwrap(),
            Pool2d::Avg { count_pad } => {
                rae_core::nn::avg_pool2d(b, &x, (k, k), (s, s), (p, p), count_pad).unwrap()
            }
        };
        worst = worst.max(cmp(b, &f, &format!("{case}.y"), &y));
        let dy = load(b, &f, &format!("{case}.g"));
        let dx = b.pool2d_backward(&x, &dy, g, kind).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &dx));
    }
    worst
}

#[test]
fn conv_and_pools_match_pytorch_on_the_cpu() {
    let w = run(&CpuBackend::new());
    eprintln!("cpu: worst error vs PyTorch {w:.3e}");
}

#[test]
fn conv_and_pools_match_pytorch_on_wgpu() {
    if let Some(b) = wgpu_or_skip() {
        let w = run(b);
        eprintln!("wgpu: worst error vs PyTorch {w:.3e}");
    }
}
