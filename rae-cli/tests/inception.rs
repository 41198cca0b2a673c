//! `store::load_inception`: the FID Inception-v3 state dict read from a file in the
//! pretrained layout (here safetensors; the `.pt` path goes through the same tensor-file
//! reader), with wrappers (`state_dict.`, `module.`) unwrapped, and bad files named.
//! Numerical parity with torch-fidelity is `tests/tests/inception.rs` (rae-tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tmp;
use rae_cli::store::{load_inception, save_safetensors};
use rae_core::models::inception::checkpoint_layout;
use rae_core::nn::{HostTensor, HostTensors};
use rae_core::{Backend, CpuBackend};

/// A state dict in the pretrained layout: small weights, unit variances, names prefixed.
fn state_dict(prefix: &str) -> HostTensors {
    let mut t = HostTensors::new();
    for (name, shape) in checkpoint_layout() {
        let n: usize = shape.iter().product();
        let v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            1.0
        } else if name.ends_with("weight") {
            0.01
        } else {
            0.0
        };
        t.insert(
            format!("{prefix}{name}"),
            HostTensor::new(shape, vec![v; n]).unwrap(),
        );
    }
    t
}

fn message(r: impl std::fmt::Debug) -> String {
    format!("{r:?}")
}

#[test]
fn loads_the_pretrained_layout_and_runs() {
    let b = CpuBackend::new();
    let dir = tmp("inception-load");
    for prefix in ["", "module.", "state_dict."] {
        let path = dir.join(format!("w{}.safetensors", prefix.len()));
        save_safetensors(&path, &state_dict(prefix), &[]).unwrap();
        let net = load_inception(&b, &path).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        if prefix.is_empty() {
            let imgs = vec![128u8; 3 * 40 * 30];
            let out = net.extract_u8(&b, &imgs, 1, (40, 30)).unwrap();
            assert_eq!(out.pool.dims(), [1, 2048]);
            assert_eq!(out.logits.dims(), [1, 1008]);
            assert_eq!(out.spatial.dims(), [1, 2023]);
            assert!(b.download(&out.pool).unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn bad_files_are_named_errors() {
    let b = CpuBackend::new();
    let dir = tmp("inception-bad");
    let mut t = state_dict("");
    t.remove("Mixed_6d.branch1x1.bn.running_var");
    t.remove("fc.bias");
    let path = dir.join("missing.safetensors");
    save_safetensors(&path, &t, &[]).unwrap();
    let e = message(load_inception(&b, &path).err().unwrap());
    assert!(
        e.contains("Mixed_6d.branch1x1.bn.running_var") && e.contains("fc.bias"),
        "{e}"
    );
    assert!(e.contains("missing.safetensors"), "{e}");

    let mut t = state_dict("");
    t.insert(
        "fc.weight",
        HostTensor::new(vec![1000, 2048], vec![0.0; 1000 * 2048]).unwrap(),
    );
    let path = dir.join("shape.safetensors");
    save_safetensors(&path, &t, &[]).unwrap();
    let e = message(load_inception(&b, &path).err().unwrap());
    assert!(e.contains("fc.weight") && e.contains("1000"), "{e}");

    let mut t = state_dict("");
    t.insert(
        "AuxLogits.fc.weight",
        HostTensor::new(vec![2], vec![0.0; 2]).unwrap(),
    );
    let path = dir.join("extra.safetensors");
    save_safetensors(&path, &t, &[]).unwrap();
    let e = message(load_inception(&b, &path).err().unwrap());
    assert!(e.contains("AuxLogits.fc.weight"), "{e}");

    let e = message(load_inception(&b, &dir.join("absent.pth")).err().unwrap());
    assert!(e.contains("absent.pth"), "{e}");
}

/// `rae-cli eval A --inception W` runs the extractor and prints the metrics as lines and
/// JSON. The values themselves are checked against torch-fidelity and ADM in rae-core's
/// `eval_metrics` test; here weights of `1/fan` in every layer give every class the same
/// logit, so the Inception Score is exactly 1 (two small images keep this cheap).
#[test]
fn eval_with_inception_weights_prints_the_metrics() {
    let dir = tmp("inception-eval");
    let mut t = HostTensors::new();
    for (name, shape) in checkpoint_layout() {
        let n: usize = shape.iter().product();
        let fan: usize = shape[1..].iter().product();
        let v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            1.0
        } else if name.ends_with("weight") {
            1.0 / fan.max(1) as f32
        } else {
            0.0
        };
        t.insert(name, HostTensor::new(shape, vec![v; n]).unwrap());
    }
    let w = dir.join("inception.safetensors");
    save_safetensors(&w, &t, &[]).unwrap();
    let a = dir.join("a");
    std::fs::create_dir_all(&a).unwrap();
    for k in 0..2u32 {
        image::RgbImage::from_fn(24, 24, |x, y| {
            let v = (x * (k + 1) * 7 + y * (3 + k) * 5) % 256;
            image::Rgb([v as u8, (255 - v) as u8, ((x * y + k) % 256) as u8])
        })
        .save(a.join(format!("{k}.png")))
        .unwrap();
    }
    let (json, stats) = (dir.join("m.json"), dir.join("a-stats.safetensors"));
    let (a, w) = (a.to_str().unwrap(), w.to_str().unwrap());
    let out = common::run(&[
        "eval",
        a,
        "--inception",
        w,
        "--metrics",
        "is",
        "--image-size",
        "24",
        "--json",
        json.to_str().unwrap(),
        "--save-stats",
        stats.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j =
        rae_core::json::parse_named(&std::fs::read_to_string(&json).unwrap(), "m.json").unwrap();
    let get = |k: &str| j.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    assert!(text.contains("is: ") && text.contains("is_std: "), "{text}");
    assert!((get("is") - 1.0).abs() < 1e-9, "IS = {}", get("is"));
    assert!(get("is_std").abs() < 1e-9, "IS std = {}", get("is_std"));
    assert_eq!(get("count"), 2.0);
    let saved = rae_cli::store::load_eval_stats(&stats).unwrap();
    assert_eq!((saved.count, saved.pool.mu.len()), (2, 2048));
    // Without weights, the flag and the file are named; mixing families is refused.
    let e = common::fails(&["eval", a, "--metrics", "fid", "--ref", a]);
    assert!(
        e.contains("--inception") && e.contains("pt_inception-2015-12-05-6726825d.pth"),
        "{e}"
    );
    let e = common::fails(&["eval", a, "--metrics", "is,psnr", "--inception", w]);
    assert!(
        e.contains("psnr") && e.contains("cannot be combined"),
        "{e}"
    );
}
