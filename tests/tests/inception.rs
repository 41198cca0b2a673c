//! The FID Inception-v3 (`rae_core::models::inception`) against torch-fidelity's
//! `FeatureExtractorInceptionV3` (`inception-v3-compat`), on the CPU and on every other
//! backend present. Fixture: `tests/fixtures/inception_io.safetensors` written by
//! `tools/make_inception_fixtures.py` (see its docstring): the weights are synthetic
//! functions of their names (`rae_tests::synthetic`), the batch-norm running statistics are
//! stored, the uint8 images are functions of integers rebuilt here.
//!
//! The worst errors are printed as `WORST <backend> <what>: ...` (`--nocapture`).
//! Throughput: `cargo test -p rae-tests --release --test inception -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::models::inception::{checkpoint_layout, resize, INPUT_SIDE};
use rae_core::models::InceptionV3;
use rae_core::nn::{HostTensor, HostTensors};
use rae_core::safetensors::SafeTensors;
use rae_core::{Backend, CpuBackend};
use rae_tests::conformance::{cuda_or_skip, wgpu_or_skip};
use rae_tests::synthetic::{hashes, synthetic};
use rae_tests::util::{fixture, max_abs};

const FIXTURE: &str = "inception_io.safetensors";
/// Groups of the fixture: name, images, height, width.
const GROUPS: [(&str, usize, usize, usize); 3] =
    [("a", 2, 299, 299), ("b", 1, 48, 64), ("c", 1, 427, 640)];

/// The script's `image(tag, h, w)`: uint8 `[3, h, w]`.
fn image(tag: &str, h: usize, w: usize) -> Vec<u8> {
    let noise: Vec<u64> = hashes(tag, 3 * h * w).collect();
    let mut out = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let grad = ((255 * x) / (w - 1).max(1) * (c + 1)
                    + (255 * y) / (h - 1).max(1) * (3 - c))
                    / 4;
                let checker = 48 * ((x / 8 + y / 8) % 2);
                let n = (noise[(c * h + y) * w + x] >> 58) as usize;
                out.push(((grad + checker + n) % 256) as u8);
            }
        }
    }
    out
}

fn group_images(g: &str, n: usize, h: usize, w: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| image(&format!("inception.{g}.{i}"), h, w))
        .collect()
}

/// The synthetic state dict: stored batch-norm statistics, every other tensor synthetic.
fn weights(st: &SafeTensors) -> HostTensors {
    let mut out = HostTensors::new();
    for (name, shape) in checkpoint_layout() {
        let data = if name.ends_with("running_mean") || name.ends_with("running_var") {
            st.read_f32(&name).unwrap_or_else(|e| panic!("{name}: {e}"))
        } else {
            synthetic(&name, &shape)
        };
        out.insert(name, HostTensor::new(shape, data).unwrap());
    }
    out
}

fn read(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.read_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every group through the network on `b`, compared with torch-fidelity.
fn parity<B: Backend>(b: &B) {
    let bytes = fixture(FIXTURE);
    let st = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    let net = InceptionV3::from_tensors(b, &weights(&st)).unwrap();
    let mut worst = [0f64; 5];
    for (g, n, h, w) in GROUPS {
        let imgs = group_images(g, n, h, w);
        let sum: i64 = imgs.iter().map(|&v| i64::from(v)).sum();
        assert_eq!(
            vec![sum],
            st.read_i64(&format!("sum_{g}")).unwrap(),
            "group {g}: the image generator differs from the script's"
        );
        // The resize alone: row 149 of the first image, all channels.
        let x = resize::preprocess_u8(&imgs, n, (h, w), INPUT_SIDE).unwrap();
        let s = INPUT_SIDE;
        let row: Vec<f32> = (0..3)
            .flat_map(|c| x[(c * s + 149) * s..(c * s + 150) * s].to_vec())
            .collect();
        let e_resize = max_abs(&row, &read(&st, &format!("resized_{g}")));
        assert!(
            e_resize <= 1e-6,
            "group {g}: resize differs by {e_resize:.3e}"
        );

        let out = net.extract_u8(b, &imgs, n, (h, w)).unwrap();
        let biased = net.add_fc_bias(b, &out.logits).unwrap();
        let checks = [
            ("pool", b.download(&out.pool).unwrap(), 1e-4),
            ("logits", b.download(&out.logits).unwrap(), 1e-4),
            ("logits_biased", b.download(&biased).unwrap(), 1e-4),
            ("spatial", b.download(&out.spatial).unwrap(), 1e-4),
        ];
        for (i, (what, got, tol)) in checks.iter().enumerate() {
            let want = read(&st, &format!("{what}_{g}"));
            let e = max_abs(got, &want);
            worst[i] = worst[i].max(e);
            assert!(
                e <= *tol,
                "{} group {g} {what}: max abs error {e:.3e} > {tol:.0e}",
                b.name()
            );
        }
        worst[4] = worst[4].max(e_resize);
    }
    println!(
        "WORST {} inception: pool {:.3e}, logits {:.3e}, logits+bias {:.3e}, spatial {:.3e}, resize {:.3e}",
        b.name(),
        worst[0],
        worst[1],
        worst[2],
        worst[3],
        worst[4]
    );
}

#[test]
fn layout_has_the_pretrained_file_size() {
    let layout = checkpoint_layout();
    // 94 BasicConv2d × 5 tensors + fc weight and bias.
    assert_eq!(layout.len(), 94 * 5 + 2);
    let values: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    // torch-fidelity's file: 23,850,960 parameters + 2 × 17,216 batch-norm statistics.
    assert_eq!(values, 23_850_960 + 2 * 17_216);
}

#[test]
fn cpu_matches_torch_fidelity() {
    parity(&CpuBackend::new());
}

#[test]
fn wgpu_matches_torch_fidelity() {
    if let Some(b) = wgpu_or_skip() {
        parity(b);
    }
}

#[test]
fn cuda_matches_torch_fidelity() {
    if let Some(b) = cuda_or_skip() {
        parity(b);
    }
}

/// Images per second of feature extraction (batch 8 at 256×256, resize included).
fn throughput<B: Backend>(b: &B) {
    let bytes = fixture(FIXTURE);
    let st = SafeTensors::parse(&bytes, FIXTURE).unwrap();
    let net = InceptionV3::from_tensors(b, &weights(&st)).unwrap();
    let imgs = group_images("bench", 8, 256, 256);
    let out = net.extract_u8(b, &imgs, 8, (256, 256)).unwrap();
    b.download(&out.pool).unwrap();
    let t = std::time::Instant::now();
    let out = net.extract_u8(b, &imgs, 8, (256, 256)).unwrap();
    b.download(&out.pool).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "THROUGHPUT {}: batch 8 in {s:.3} s = {:.2} images/s",
        b.name(),
        8.0 / s
    );
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn throughput_cpu() {
    throughput(&CpuBackend::new());
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn throughput_wgpu() {
    if let Some(b) = wgpu_or_skip() {
        throughput(b);
    }
}
