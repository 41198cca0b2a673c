//! `Conv2d` and both poolings against PyTorch (`tests/fixtures/conv_io.safetensors`, made by
//! `tools/make_conv_fixtures.py`): outputs and input/weight/bias gradients of `F.conv2d`
//! (stride 2 with padding (0, 3), and a 7×1 window with padding (3, 0)), `F.max_pool2d(3,
//! stride=2)` and `F.avg_pool2d(3, 1, 1, count_include_pad=False)`, on the CPU and on WGPU
//! (skipped without an adapter unless `RAE_REQUIRE_WGPU=1`), each within 1e-4. The
//! convolutions also run split into image chunks and channel groups ([`ConvSplit`]): given
//! explicitly, and chosen by a WGPU backend whose binding limit is a few KiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::{Backend, Pool2d, Window2d};
use rae_core::nn::{
    conv2d_backward_with, conv2d_input_grad_with, conv2d_with, max_pool2d, Conv2d, ConvSplit,
    Grads, Param,
};
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

const CONVS: [(&str, (usize, usize), (usize, usize)); 2] =
    [("conv_a", (2, 2), (0, 3)), ("conv_b", (1, 1), (3, 0))];

fn run<B: Backend>(b: &B) -> f64 {
    let bytes = fixture("conv_io.safetensors");
    let f = SafeTensors::parse(&bytes, "conv_io.safetensors").unwrap();
    let mut worst = 0.0f64;
    for (case, stride, padding) in CONVS {
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

/// The functional convolution and both backwards, in the pieces `split`, against the
/// fixture; returns the worst error.
fn run_split<B: Backend>(b: &B, split: ConvSplit) -> f64 {
    let bytes = fixture("conv_io.safetensors");
    let f = SafeTensors::parse(&bytes, "conv_io.safetensors").unwrap();
    let mut worst = 0.0f64;
    for (case, stride, padding) in CONVS {
        let (x, w) = (
            load(b, &f, &format!("{case}.x")),
            load(b, &f, &format!("{case}.weight")),
        );
        let (bias, dy) = (
            load(b, &f, &format!("{case}.bias")),
            load(b, &f, &format!("{case}.g")),
        );
        let y = conv2d_with(b, &x, &w, Some(&bias), stride, padding, Some(split)).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.y"), &y));
        let g = conv2d_backward_with(b, &x, &w, true, stride, padding, &dy, Some(split)).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &g.dx));
        worst = worst.max(cmp(b, &f, &format!("{case}.dweight"), &g.dweight));
        worst = worst.max(cmp(b, &f, &format!("{case}.dbias"), &g.dbias.unwrap()));
        let dx = conv2d_input_grad_with(b, &x, &w, stride, padding, &dy, Some(split)).unwrap();
        worst = worst.max(cmp(b, &f, &format!("{case}.dx"), &dx));
    }
    worst
}

const SPLITS: [ConvSplit; 4] = [
    ConvSplit {
        images: 1,
        channels: 1,
    },
    ConvSplit {
        images: 1,
        channels: 2,
    },
    ConvSplit {
        images: 2,
        channels: 2,
    },
    ConvSplit {
        images: 1,
        channels: 99,
    },
];

#[test]
fn split_convolutions_match_pytorch_on_the_cpu() {
    let b = CpuBackend::new();
    let w = SPLITS.iter().map(|&s| run_split(&b, s)).fold(0.0, f64::max);
    eprintln!("cpu, split: worst error vs PyTorch {w:.3e}");
    // Split by images only, the ops are those of one pass on each image: the same bits.
    let bytes = fixture("conv_io.safetensors");
    let f = SafeTensors::parse(&bytes, "conv_io.safetensors").unwrap();
    let (x, wt) = (load(&b, &f, "conv_a.x"), load(&b, &f, "conv_a.weight"));
    let by_image = ConvSplit {
        images: 1,
        channels: 3,
    };
    let one = conv2d_with(&b, &x, &wt, None, (2, 2), (0, 3), Some(by_image)).unwrap();
    let all = conv2d_with(&b, &x, &wt, None, (2, 2), (0, 3), None).unwrap();
    assert_eq!(b.download(&one).unwrap(), b.download(&all).unwrap());
}

#[test]
fn split_convolutions_match_pytorch_on_wgpu() {
    if let Some(b) = wgpu_or_skip() {
        let w = SPLITS.iter().map(|&s| run_split(b, s)).fold(0.0, f64::max);
        eprintln!("wgpu, split: worst error vs PyTorch {w:.3e}");
    }
}

/// A device that binds at most 900 floats: the im2col of either case (1260 and 1680
/// floats per image) is over it, so the convolutions split by themselves and still match.
#[test]
fn a_small_binding_limit_splits_the_convolutions() {
    let Some(b) = wgpu_or_skip() else {
        return;
    };
    let small = b.clone().with_max_alloc(900 * 4);
    let g = Window2d::nchw("test", &[2, 3, 9, 11], (3, 5), (2, 2), (0, 3)).unwrap();
    let plan = ConvSplit::for_backend(&small, &g, 4).unwrap();
    assert_eq!(
        plan,
        ConvSplit {
            images: 1,
            channels: 2
        }
    );
    let w = run(&small);
    eprintln!("wgpu limited to 3600 bytes: worst error vs PyTorch {w:.3e}");
}

#[test]
fn the_split_plan_fits_the_budget_or_names_the_image() {
    let g = Window2d::nchw("test", &[8, 64, 256, 256], (3, 3), (1, 1), (1, 1)).unwrap();
    let whole = ConvSplit {
        images: 8,
        channels: 64,
    };
    assert_eq!(ConvSplit::plan(&g, 64, None).unwrap(), whole);
    assert_eq!(ConvSplit::plan(&g, 64, Some(usize::MAX)).unwrap(), whole);
    // One image's im2col is 65536·576 floats (144 MiB): two fit in 300M floats.
    let per_image = 65536 * 576;
    let two = ConvSplit::plan(&g, 64, Some(2 * per_image + 5)).unwrap();
    assert_eq!(
        two,
        ConvSplit {
            images: 2,
            channels: 64
        }
    );
    // 128 MiB of binding: one image, 56 channels (56·9·65536 floats) per group.
    let lavapipe = ConvSplit::plan(&g, 64, Some(128 << 18)).unwrap();
    assert_eq!(
        lavapipe,
        ConvSplit {
            images: 1,
            channels: 56
        }
    );
    let e = ConvSplit::plan(&g, 64, Some(65536 * 8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("256×256") && e.contains("4194304"), "{e}");
}
