//! Encoder folders of every family through the CLI's loaders: the family comes from
//! `config.json`'s `model_type` (HuggingFace folders written by `transformers` in
//! `tests/fixtures/{dinov2,siglip,siglip2,mae}`), the RAE uses the family's image mean/std,
//! folders written by `store::save_encoder_dir` load back to the same model, and bad
//! folders give errors that name the file and the tensor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{decoder_cfg, fixture, tmp};
use rae_cli::store::encoders::{
    family_of, load_encoder_dir, save_encoder_dir, EncoderConfig, Family,
};
use rae_cli::store::{self, RaePaths};
use rae_core::json::parse_named;
use rae_core::models::rae::{IMAGENET_MEAN, IMAGENET_STD};
use rae_core::models::{Encoder, MaeConfig, MaeEncoder, RaeDecoder, SiglipConfig, SiglipEncoder};
use rae_core::nn::{save_module, Init};
use rae_core::{Backend, CpuBackend, PhiloxKey, Unary};

fn outputs(b: &CpuBackend, e: &Encoder<CpuBackend>, side: usize) -> Vec<f32> {
    let x = b
        .fill_normal(&[2, 3, side, side], PhiloxKey::new(4, 4), 0)
        .unwrap();
    b.download(&e.forward(b, &x).unwrap()).unwrap()
}

#[test]
fn families_are_detected_from_model_type() {
    let b = CpuBackend::new();
    for (dir, family, width, patch) in [
        ("dinov2", "DINOv2-with-registers", 32, 14),
        ("siglip", "SigLIP", 32, 4),
        ("siglip2", "SigLIP", 32, 4),
        ("mae", "MAE", 32, 4),
    ] {
        let e = store::load_encoder(&b, &fixture(dir)).unwrap();
        assert_eq!(e.family(), family, "{dir}");
        assert_eq!((e.hidden_size(), e.patch_size()), (width, patch), "{dir}");
        assert_eq!(
            EncoderConfig::read(&fixture(dir)).unwrap().dims(),
            (width, patch)
        );
    }
    let json = |t: &str| parse_named(&format!(r#"{{"model_type": "{t}"}}"#), "c").unwrap();
    assert_eq!(
        family_of(&json("siglip2_vision_model"), "c").unwrap(),
        Family::Siglip
    );
    assert_eq!(family_of(&json("vit_mae"), "c").unwrap(), Family::Mae);
    assert_eq!(
        family_of(&json("dinov2_with_registers"), "c").unwrap(),
        Family::Dinov2
    );
    let e = family_of(&json("clip_vision_model"), "x/config.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x/config.json") && e.contains("clip_vision_model"),
        "{e}"
    );
}

#[test]
fn the_rae_uses_the_family_image_mean_and_std() {
    let b = CpuBackend::new();
    for (dir, mean, std) in [
        ("siglip", [0.5; 3], [0.5; 3]),
        ("mae", IMAGENET_MEAN, IMAGENET_STD),
        ("dinov2", IMAGENET_MEAN, IMAGENET_STD),
    ] {
        let d = tmp(&format!("family-{dir}"));
        let enc = store::load_encoder(&b, &fixture(dir)).unwrap();
        // A decoder matching the encoder's 32-wide tokens on an 8×8 grid (16×16 for DINOv2).
        let g = if dir == "dinov2" { 16 } else { 8 };
        let dec = RaeDecoder::new(&b, &mut Init::new(1), decoder_cfg(32, 2, g)).unwrap();
        rae_cli::store::save_decoder(&b, &dec, &d.join("decoder.safetensors")).unwrap();
        let paths = RaePaths {
            encoder: fixture(dir),
            decoder: d.join("decoder.safetensors"),
            decoder_config: None,
            stats: None,
            encoder_input_size: Some(g * enc.patch_size()),
        };
        let rae = store::load_rae(&b, &paths).unwrap();
        assert_eq!((rae.image_mean, rae.image_std), (mean, std), "{dir}");
        assert_eq!(rae.latent_dims(), [32, g, g]);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn saved_folders_load_back_to_the_same_encoder() {
    let b = CpuBackend::new();
    let siglip = SiglipConfig {
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 24,
        patch_size: 4,
        image_size: 16,
        layer_norm_eps: 1e-6,
        act: Unary::GeluTanh,
        patch: rae_core::models::SiglipPatch::Conv,
    };
    let mae = MaeConfig {
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 24,
        patch_size: 4,
        image_size: 12,
        layer_norm_eps: 1e-12,
        act: Unary::GeluErf,
    };
    let encoders: Vec<Encoder<CpuBackend>> = vec![
        SiglipEncoder::new(&b, &mut Init::new(5), siglip)
            .unwrap()
            .into(),
        MaeEncoder::new(&b, &mut Init::new(6), mae).unwrap().into(),
        rae_core::models::Dinov2Encoder::new(&b, &mut Init::new(7), common::encoder_cfg(16, 4, 3))
            .unwrap()
            .into(),
    ];
    for enc in encoders {
        let d = tmp(&format!("save-{}", enc.family()));
        save_encoder_dir(&b, &enc, &d).unwrap();
        let back = load_encoder_dir(&b, &d).unwrap();
        assert_eq!(back.family(), enc.family());
        let (s0, s1) = (
            save_module(&b, &enc).unwrap(),
            save_module(&b, &back).unwrap(),
        );
        assert_eq!(
            s0,
            s1,
            "{}: tensors differ after the round trip",
            enc.family()
        );
        assert_eq!(outputs(&b, &enc, 16), outputs(&b, &back, 16));
    }
}

#[test]
fn bad_encoder_folders_name_the_file_and_the_tensor() {
    let b = CpuBackend::new();
    // A tensor missing from the checkpoint.
    let d = tmp("bad-enc");
    let mae = d.join("mae");
    copy_dir(&fixture("mae"), &mae);
    let f = rae_cli::store::load_tensor_file(&mae.join("model.safetensors")).unwrap();
    let mut t = f.tensors.clone();
    t.remove("vit.encoder.layer.1.intermediate.dense.weight")
        .unwrap();
    rae_cli::store::save_safetensors(&mae.join("model.safetensors"), &t, &[]).unwrap();
    let e = store::load_encoder(&b, &mae).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("encoder.layer.1.intermediate.dense.weight"),
        "{e}"
    );
    // A config that does not match the weights (another width).
    let sig = d.join("siglip");
    copy_dir(&fixture("siglip"), &sig);
    let cfg = std::fs::read_to_string(sig.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(sig.join("config.json"), cfg).unwrap();
    let e = store::load_encoder(&b, &sig).unwrap_err().to_string();
    assert!(e.contains("mlp.fc1.weight") && e.contains("48"), "{e}");
    // No weights, no folder, an unknown model type.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(fixture("mae/config.json"), empty.join("config.json")).unwrap();
    let e = store::load_encoder(&b, &empty).unwrap_err().to_string();
    assert!(
        e.contains("empty") && e.contains("model.safetensors"),
        "{e}"
    );
    let e = store::load_encoder(&b, &d.join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    std::fs::write(empty.join("config.json"), r#"{"model_type": "vit"}"#).unwrap();
    let e = store::load_encoder(&b, &empty).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("\"vit\""), "{e}");
}
