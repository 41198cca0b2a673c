//! diffusers `AutoencoderRAE` folders: read as a RAE (`--rae DIR`), written by
//! `rae-cli export --diffusers OUT`.
//!
//! - `tests/fixtures/diffusers_rae/` was written by diffusers 0.42.1 (`save_pretrained` of a
//!   small random model); our encode/decode of it must match diffusers' outputs
//!   (`diffusers_rae_io.safetensors`).
//! - `tests/fixtures/rae_exported_diffusers/` was written by `rae-cli export` from the tiny RAE
//!   built by [`our_rae`] (remade by the ignored test `remake_exported_fixture`); diffusers'
//!   outputs on it (`rae_exported_diffusers_io.safetensors`) must match ours.
//! - Export then re-import gives bit-identical outputs; bad folders give named errors.
//!
//! - SigLIP2 and MAE encoders (`encoder_type` `siglip2`, `mae`): see [`families`].
//!
//! `tools/make_diffusers_fixtures.py` makes the diffusers side of the fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "diffusers/families.rs"]
mod families;

use std::path::Path;

use common::{fails, fixture, ok, tmp};
use rae_cli::store::{self, RaePaths};
use rae_core::models::{DecoderConfig, Dinov2Config, Dinov2Encoder, LatentStats, Rae, RaeDecoder};
use rae_core::nn::{save_module, HostTensor, HostTensors, Init};
use rae_core::{Backend, CpuBackend, Unary};

fn load(b: &CpuBackend, dir: &Path) -> Rae<CpuBackend> {
    store::load_rae(b, &RaePaths::in_dir(dir)).unwrap()
}

fn io(name: &str) -> HostTensors {
    store::load_tensor_file(&fixture(name)).unwrap().tensors
}

/// Our encode of `images` and decode of `z`, as host vectors.
fn run_rae(b: &CpuBackend, rae: &Rae<CpuBackend>, t: &HostTensors) -> (Vec<f32>, Vec<f32>) {
    let x = t.get("images").unwrap();
    let z = t.get("z").unwrap();
    let xs = b.upload(&x.data, &x.shape).unwrap();
    let zs = b.upload(&z.data, &z.shape).unwrap();
    let lat = b.download(&rae.encode(b, &xs).unwrap()).unwrap();
    let dec = b.download(&rae.decode(b, &zs).unwrap()).unwrap();
    (lat, dec)
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_against(b: &CpuBackend, rae: &Rae<CpuBackend>, io_name: &str) {
    let t = io(io_name);
    let (lat, dec) = run_rae(b, rae, &t);
    let el = worst(&lat, &t.get("latents").unwrap().data);
    let ed = worst(&dec, &t.get("decoded").unwrap().data);
    println!("{io_name}: worst |Δ| latents {el:.3e}, decoded {ed:.3e}");
    assert!(el <= 1e-4, "latents differ from diffusers' by {el}");
    assert!(ed <= 1e-4, "decoded images differ from diffusers' by {ed}");
}

#[test]
fn diffusers_made_folder_matches_diffusers_outputs() {
    let b = CpuBackend::new();
    let rae = load(&b, &fixture("diffusers_rae"));
    assert_eq!(rae.encoder_input_size, 56);
    assert_eq!(rae.latent_dims(), [64, 4, 4]);
    check_against(&b, &rae, "diffusers_rae_io.safetensors");
}

#[test]
fn diffusers_folder_is_accepted_by_the_cli() {
    let out = tmp("diffusers-cli-export");
    let dir = fixture("diffusers_rae");
    ok(&[
        "export",
        "--diffusers",
        out.join("again").to_str().unwrap(),
        "--rae",
        dir.to_str().unwrap(),
    ]);
    assert!(store::is_diffusers_dir(&out.join("again")));
    // The encoder alone (`--encoder DIR`) loads from the same folder.
    let b = CpuBackend::new();
    let enc = store::load_encoder(&b, &dir).unwrap();
    assert_eq!((enc.hidden_size(), enc.patch_size()), (64, 14));
}

/// A value in [-1, 1) from an index (no RNG state to keep in step).
fn noise(seed: u64, i: usize) -> f32 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_add(1);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn perturb(t: &HostTensors, seed: u64, scale: f32) -> HostTensors {
    let mut out = HostTensors::new();
    for (k, (n, v)) in t.iter().enumerate() {
        let data = v
            .data
            .iter()
            .enumerate()
            .map(|(i, x)| x + scale * noise(seed + k as u64 * 1000, i))
            .collect();
        out.insert(n, HostTensor::new(v.shape.clone(), data).unwrap());
    }
    out
}

/// The tiny RAE of `rae_exported_diffusers/`, built by our code: a DINOv2 encoder of width
/// 64 (one head of 64, as diffusers fixes), patch 14, table 37×37, input 224; a decoder of
/// width 32, patch 4 on a 16×16 grid (where diffusers' position table is ours); statistics
/// with `eps = 1e-5`. Every weight is perturbed.
fn our_rae(b: &CpuBackend) -> Rae<CpuBackend> {
    let ecfg = Dinov2Config {
        hidden_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        mlp_ratio: 4.0,
        patch_size: 14,
        image_size: 518,
        num_register_tokens: 4,
        layer_norm_eps: 1e-6,
        layerscale_value: 1.0,
        act: Unary::GeluErf,
    };
    let mut enc = Dinov2Encoder::new(b, &mut Init::new(31), ecfg).unwrap();
    let w = perturb(&save_module(b, &enc).unwrap(), 1, 0.1);
    enc.load(b, &w).unwrap();
    let dcfg = DecoderConfig {
        hidden_size: 64,
        decoder_hidden_size: 32,
        decoder_num_hidden_layers: 1,
        decoder_num_attention_heads: 2,
        decoder_intermediate_size: 64,
        patch_size: 4,
        image_size: 64,
        layer_norm_eps: 1e-12,
        num_channels: 3,
    };
    let mut dec = RaeDecoder::new(b, &mut Init::new(32), dcfg).unwrap();
    let mut w = perturb(&save_module(b, &dec).unwrap(), 2, 0.2);
    w.remove("decoder_pos_embed");
    dec.load(b, &w).unwrap();
    let n = 64 * 256;
    let mean: Vec<f32> = (0..n).map(|i| 0.5 * noise(3, i)).collect();
    let var: Vec<f32> = (0..n).map(|i| 0.3 + noise(4, i).abs()).collect();
    let stats = LatentStats::new(b, &mean, &var, 1e-5).unwrap();
    rae_cli::presets::assemble_rae(enc.into(), dec, Some(stats), None).unwrap()
}

fn write_our_rae_dir(b: &CpuBackend, dir: &Path) {
    let rae = our_rae(b);
    store::save_encoder_dir(b, &rae.encoder, &dir.join("encoder")).unwrap();
    store::save_decoder(b, &rae.decoder, &dir.join("decoder.safetensors")).unwrap();
    let s = rae.stats.as_ref().unwrap();
    store::save_stats(
        &dir.join("stats.safetensors"),
        &b.download(&s.mean).unwrap(),
        &b.download(&s.var).unwrap(),
        rae.latent_dims(),
    )
    .unwrap();
}

/// Remakes `tests/fixtures/rae_exported_diffusers/` with the CLI (then run
/// `tools/make_diffusers_fixtures.py exported` for diffusers' outputs on it).
#[test]
#[ignore = "writes a fixture"]
fn remake_exported_fixture() {
    let b = CpuBackend::new();
    let src = tmp("diffusers-ours");
    write_our_rae_dir(&b, &src);
    let out = fixture("rae_exported_diffusers");
    ok(&[
        "export",
        "--diffusers",
        out.to_str().unwrap(),
        "--rae",
        src.to_str().unwrap(),
    ]);
}

#[test]
fn exported_folder_matches_diffusers_outputs_and_ours() {
    let b = CpuBackend::new();
    let rae = load(&b, &fixture("rae_exported_diffusers"));
    check_against(&b, &rae, "rae_exported_diffusers_io.safetensors");
    // The model as built here (before export) gives the same numbers.
    let ours = our_rae(&b);
    let t = io("rae_exported_diffusers_io.safetensors");
    let (a, c) = (run_rae(&b, &ours, &t), run_rae(&b, &rae, &t));
    let (el, ed) = (worst(&a.0, &c.0), worst(&a.1, &c.1));
    println!("ours before export vs the exported folder: latents {el:.3e}, decoded {ed:.3e}");
    assert!(el <= 1e-5 && ed <= 1e-5);
}

#[test]
fn cli_export_is_deterministic_and_matches_the_fixture() {
    let b = CpuBackend::new();
    let src = tmp("diffusers-ours-cli");
    write_our_rae_dir(&b, &src);
    let out = src.join("out");
    ok(&[
        "export",
        "--diffusers",
        out.to_str().unwrap(),
        "--rae",
        src.to_str().unwrap(),
    ]);
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        let a = std::fs::read(out.join(f)).unwrap();
        let c = std::fs::read(fixture("rae_exported_diffusers").join(f)).unwrap();
        assert!(a == c, "{f} differs from the committed fixture");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn export_then_import_is_bit_exact() {
    let b = CpuBackend::new();
    for (name, rae, io_name) in [
        (
            "diffusers-made",
            load(&b, &fixture("diffusers_rae")),
            "diffusers_rae_io.safetensors",
        ),
        ("ours", our_rae(&b), "rae_exported_diffusers_io.safetensors"),
    ] {
        let out = tmp(&format!("diffusers-roundtrip-{name}"));
        store::save_diffusers_rae(&b, &rae, &out).unwrap();
        let back = load(&b, &out);
        let t = io(io_name);
        let (a, c) = (run_rae(&b, &rae, &t), run_rae(&b, &back, &t));
        assert_eq!(
            bits(&a.0),
            bits(&c.0),
            "{name}: latents differ after a round trip"
        );
        assert_eq!(
            bits(&a.1),
            bits(&c.1),
            "{name}: images differ after a round trip"
        );
    }
}

/// A copy of the diffusers fixture with `config.json` edited by `cfg` and the weights by
/// `weights`.
fn hostile(
    name: &str,
    cfg: impl Fn(&str) -> String,
    weights: impl Fn(&mut HostTensors),
) -> std::path::PathBuf {
    let src = fixture("diffusers_rae");
    let dir = tmp(&format!("diffusers-bad-{name}"));
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg(&text)).unwrap();
    let wpath = src.join("diffusion_pytorch_model.safetensors");
    let mut t = store::load_tensor_file(&wpath).unwrap().tensors;
    weights(&mut t);
    store::save_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &t, &[]).unwrap();
    dir
}

fn error_of(dir: &Path) -> String {
    let b = CpuBackend::new();
    match store::load_rae(&b, &RaePaths::in_dir(dir)) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_folders_give_named_errors() {
    let keep = |_: &mut HostTensors| {};
    let cases: Vec<(&str, std::path::PathBuf, &[&str])> = vec![
        (
            "clip",
            hostile(
                "clip",
                |s| s.replace("\"encoder_type\": \"dinov2\"", "\"encoder_type\": \"clip\""),
                keep,
            ),
            &["encoder_type", "clip", "not supported"],
        ),
        (
            "width",
            hostile(
                "width",
                |s| s.replace("\"encoder_hidden_size\": 64", "\"encoder_hidden_size\": 96"),
                keep,
            ),
            &["encoder_hidden_size", "96"],
        ),
        (
            "huge",
            hostile(
                "huge",
                |s| {
                    s.replace(
                        "\"decoder_num_hidden_layers\": 1",
                        "\"decoder_num_hidden_layers\": 100000",
                    )
                },
                keep,
            ),
            &["decoder"],
        ),
        (
            "image_size",
            hostile(
                "image_size",
                |s| s.replace("\"image_size\": null", "\"image_size\": 65"),
                keep,
            ),
            &["image_size", "65"],
        ),
        (
            "missing",
            hostile(
                "missing",
                |s| s.to_string(),
                |t| {
                    t.remove("decoder.decoder_norm.weight");
                },
            ),
            &["decoder_norm.weight", "diffusion_pytorch_model.safetensors"],
        ),
        (
            "missing-encoder",
            hostile(
                "missing-encoder",
                |s| s.to_string(),
                |t| {
                    t.remove("encoder.embeddings.register_tokens");
                },
            ),
            &["register_tokens"],
        ),
        (
            "stats-shape",
            hostile(
                "stats-shape",
                |s| s.to_string(),
                |t| {
                    t.insert(
                        "_latents_std",
                        HostTensor::new(vec![3], vec![1.0; 3]).unwrap(),
                    );
                },
            ),
            &["_latents_std", "[3]"],
        ),
        (
            "stats-negative",
            hostile(
                "stats-negative",
                |s| s.to_string(),
                |t| {
                    let mut v = t.get("_latents_std").unwrap().clone();
                    v.data[5] = -1.0;
                    t.insert("_latents_std", v);
                },
            ),
            &["std[5]"],
        ),
    ];
    for (name, dir, needles) in cases {
        let e = error_of(&dir);
        for n in needles {
            assert!(e.contains(n), "{name}: {e:?} does not mention {n:?}");
        }
    }
    // Not a JSON object: the folder is not taken for a diffusers one, and the error names the
    // missing encoder folder instead of panicking.
    let dir = hostile("array", |_| "[1, 2]".into(), |_| {});
    assert!(!store::is_diffusers_dir(&dir));
    let e = fails(&[
        "export",
        "--diffusers",
        dir.join("o").to_str().unwrap(),
        "--rae",
        dir.to_str().unwrap(),
    ]);
    assert!(e.contains("encoder"), "{e}");
}

#[test]
fn export_refuses_what_diffusers_cannot_express() {
    let b = CpuBackend::new();
    let rae = common::tiny_rae(&b, 32, 4, 4);
    let e = store::save_diffusers_rae(&b, &rae, &tmp("diffusers-refuse"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("head width"), "{e}");
}
