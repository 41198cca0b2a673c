//! The SigLIP2 and MAE encoders of diffusers' `AutoencoderRAE` (`encoder_type` `siglip2`,
//! `mae`): `tests/fixtures/diffusers_rae_{siglip2,mae}/` were written by diffusers 0.42.1
//! (`tools/make_diffusers_fixtures.py siglip2 mae`), with diffusers' outputs in
//! `diffusers_rae_{kind}_io.safetensors`; `diffusers_rae_{kind}_exported_io.safetensors` are
//! diffusers' outputs on the folders `rae-cli export --diffusers` writes from them.

use std::path::Path;

use rae_cli::store;
use rae_core::models::Encoder;
use rae_core::nn::{HostTensor, HostTensors};
use rae_core::CpuBackend;

use super::common::{fixture, ok, tmp};
use super::{bits, check_against, io, load, run_rae, worst};

const KINDS: [&str; 2] = ["siglip2", "mae"];

fn folder(kind: &str) -> std::path::PathBuf {
    fixture(&format!("diffusers_rae_{kind}"))
}

fn weights(dir: &Path) -> HostTensors {
    store::load_tensor_file(&dir.join("diffusion_pytorch_model.safetensors"))
        .unwrap()
        .tensors
}

#[test]
fn siglip2_and_mae_folders_match_diffusers_outputs() {
    let b = CpuBackend::new();
    for kind in KINDS {
        let rae = load(&b, &folder(kind));
        let family_ok = match (&rae.encoder, kind) {
            (Encoder::Siglip(e), "siglip2") => e.config.intermediate_size == 3072,
            (Encoder::Mae(e), "mae") => e.config.intermediate_size == 3072,
            _ => false,
        };
        assert!(
            family_ok,
            "{kind}: built a {} encoder",
            rae.encoder.family()
        );
        assert_eq!(rae.encoder_input_size, 64);
        assert_eq!(rae.latent_dims(), [64, 4, 4]);
        let want = if kind == "siglip2" {
            [0.5; 3]
        } else {
            rae_core::models::rae::IMAGENET_MEAN
        };
        assert_eq!(rae.image_mean, want, "{kind}: image mean");
        check_against(&b, &rae, &format!("diffusers_rae_{kind}_io.safetensors"));
    }
}

/// `folder(kind)` with its encoder tensors renamed by `f` (names without `encoder.`).
fn relabelled(kind: &str, f: impl Fn(&str) -> String) -> std::path::PathBuf {
    let src = folder(kind);
    let dir = tmp(&format!("diffusers-relabel-{kind}"));
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut out = HostTensors::new();
    for (n, t) in weights(&src).iter() {
        let n = match n.strip_prefix("encoder.") {
            Some(rest) => format!("encoder.{}", f(rest)),
            None => n.to_string(),
        };
        out.insert(n, t.clone());
    }
    store::save_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &out, &[]).unwrap();
    dir
}

/// transformers 5's flat SigLIP layout and transformers 4's MAE names give the same model.
#[test]
fn other_transformers_layouts_give_the_same_model() {
    let b = CpuBackend::new();
    let siglip_flat = relabelled("siglip2", |n| {
        n.strip_prefix("vision_model.").unwrap_or(n).to_string()
    });
    let mae_t4 = relabelled("mae", |n| {
        let Some(tail) = n.strip_prefix("layers.") else {
            return n.to_string();
        };
        let (i, rest) = tail.split_once('.').unwrap();
        let rest = [
            ("attention.q_proj.", "attention.attention.query."),
            ("attention.k_proj.", "attention.attention.key."),
            ("attention.v_proj.", "attention.attention.value."),
            ("attention.o_proj.", "attention.output.dense."),
            ("mlp.fc1.", "intermediate.dense."),
            ("mlp.fc2.", "output.dense."),
        ]
        .iter()
        .find_map(|(a, c)| rest.strip_prefix(a).map(|r| format!("{c}{r}")))
        .unwrap_or_else(|| rest.to_string());
        format!("encoder.layer.{i}.{rest}")
    });
    assert!(weights(&mae_t4)
        .names()
        .any(|n| n == "encoder.encoder.layer.0.attention.attention.query.weight"));
    for (kind, dir) in [("siglip2", siglip_flat), ("mae", mae_t4)] {
        let t = io(&format!("diffusers_rae_{kind}_io.safetensors"));
        let a = run_rae(&b, &load(&b, &folder(kind)), &t);
        let c = run_rae(&b, &load(&b, &dir), &t);
        assert_eq!(bits(&a.0), bits(&c.0), "{kind}: latents");
        assert_eq!(bits(&a.1), bits(&c.1), "{kind}: images");
    }
}

#[test]
fn siglip2_and_mae_export_then_import_is_bit_exact() {
    let b = CpuBackend::new();
    for kind in KINDS {
        let rae = load(&b, &folder(kind));
        let out = tmp(&format!("diffusers-roundtrip-{kind}"));
        store::save_diffusers_rae(&b, &rae, &out).unwrap();
        let back = load(&b, &out);
        assert_eq!(back.image_mean, rae.image_mean);
        assert_eq!(back.image_std, rae.image_std);
        let t = io(&format!("diffusers_rae_{kind}_io.safetensors"));
        let (a, c) = (run_rae(&b, &rae, &t), run_rae(&b, &back, &t));
        assert_eq!(bits(&a.0), bits(&c.0), "{kind}: latents after a round trip");
        assert_eq!(bits(&a.1), bits(&c.1), "{kind}: images after a round trip");
    }
}

/// The CLI's export of a diffusers-made folder holds every tensor diffusers wrote, under the
/// same name and with the same bits, except SigLIP's attention-pooling head (unused by RAE,
/// written as zeros); diffusers' outputs on such an export match ours.
#[test]
fn exported_siglip2_and_mae_folders_match_diffusers() {
    let b = CpuBackend::new();
    for kind in KINDS {
        let out = tmp(&format!("diffusers-export-{kind}")).join("out");
        ok(&[
            "export",
            "--diffusers",
            out.to_str().unwrap(),
            "--rae",
            folder(kind).to_str().unwrap(),
        ]);
        let (theirs, ours) = (weights(&folder(kind)), weights(&out));
        assert_eq!(theirs.len(), ours.len(), "{kind}: tensor count");
        for (n, t) in theirs.iter() {
            let e = ours
                .get(n)
                .unwrap_or_else(|| panic!("{kind}: export lacks {n}"));
            assert_eq!(e.shape, t.shape, "{kind}: {n}");
            if n.starts_with("encoder.vision_model.head.") {
                assert!(e.data.iter().all(|x| *x == 0.0), "{kind}: {n}");
            } else {
                assert_eq!(bits(&e.data), bits(&t.data), "{kind}: {n}");
            }
        }
        let rae = load(&b, &out);
        let t = io(&format!("diffusers_rae_{kind}_io.safetensors"));
        let d = io(&format!("diffusers_rae_{kind}_exported_io.safetensors"));
        let (lat, dec) = run_rae(&b, &rae, &t);
        let el = worst(&lat, &d.get("latents").unwrap().data);
        let ed = worst(&dec, &d.get("decoded").unwrap().data);
        println!("{kind} exported: worst |Δ| latents {el:.3e}, decoded {ed:.3e}");
        assert!(el <= 1e-4 && ed <= 1e-4, "{kind}: {el} {ed}");
    }
}

/// Export refuses encoders that diffusers cannot rebuild, naming what diffusers fixes.
#[test]
fn export_refuses_siglip_and_mae_diffusers_cannot_express() {
    let b = CpuBackend::new();
    for kind in KINDS {
        let mut rae = load(&b, &folder(kind));
        let why = match &mut rae.encoder {
            Encoder::Siglip(e) => {
                e.config.layer_norm_eps = 1e-5;
                "eps"
            }
            Encoder::Mae(e) => {
                e.config.image_size = 256;
                "image_size"
            }
            Encoder::Dinov2(_) => unreachable!(),
        };
        let e = store::save_diffusers_rae(&b, &rae, &tmp(&format!("diffusers-refuse-{kind}")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why) && e.contains("diffusers"), "{kind}: {e}");
    }
}

/// A SigLIP2 folder missing a layer weight, or an MAE folder with a wrongly shaped table, is
/// named.
#[test]
fn bad_siglip2_and_mae_folders_give_named_errors() {
    let b = CpuBackend::new();
    let cases: [(&str, &str, &str); 2] = [
        (
            "siglip2",
            "encoder.vision_model.encoder.layers.0.mlp.fc1.weight",
            "mlp.fc1.weight",
        ),
        (
            "mae",
            "encoder.embeddings.position_embeddings",
            "position_embeddings",
        ),
    ];
    for (kind, name, needle) in cases {
        let src = folder(kind);
        let dir = tmp(&format!("diffusers-bad-{kind}"));
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        let mut w = weights(&src);
        if kind == "mae" {
            // The right size, the wrong shape (transposed).
            let t = w.get(name).unwrap().clone();
            w.insert(name, HostTensor::new(vec![1, 64, 197], t.data).unwrap());
        } else {
            w.remove(name);
        }
        store::save_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &w, &[]).unwrap();
        let e = match store::load_rae(&b, &store::RaePaths::in_dir(&dir)) {
            Ok(_) => panic!("{kind}: should not load"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{kind}: {e}");
    }
}

/// diffusers normalises images with its `encoder_mean`/`encoder_std` buffers, which
/// `from_pretrained` loads over the config's `encoder_norm_*`: so do we.
#[test]
fn image_mean_std_buffers_win_over_the_config() {
    let b = CpuBackend::new();
    let src = folder("siglip2");
    let dir = tmp("diffusers-image-stats");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut w = weights(&src);
    let mean = [0.25f32, 0.5, 0.75];
    w.insert(
        "encoder_mean",
        HostTensor::new(vec![1, 3, 1, 1], mean.to_vec()).unwrap(),
    );
    store::save_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &w, &[]).unwrap();
    let rae = load(&b, &dir);
    assert_eq!((rae.image_mean, rae.image_std), (mean, [0.5; 3]));
}
