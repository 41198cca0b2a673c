//! Helpers shared by the integration tests of `--config`, `eval` and `stats`: scratch
//! folders, running the binary, and small RAE folders built directly (random frozen
//! encoder, random decoder, statistics) without a training run.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rae_cli::commands::stats::{compute_stats, save_stats, StatsRule};
use rae_cli::data::Shapes;
use rae_core::models::{DecoderConfig, Dinov2Config, Dinov2Encoder, Rae, RaeDecoder};
use rae_core::nn::Init;
use rae_core::{CpuBackend, Unary};

/// The flags of a tiny trained run (2 decoder steps, 2 DiT steps on 40 built-in images):
/// enough to sample from, in seconds.
pub const TINY_RUN: &[&str] = &[
    "--stage1-steps",
    "2",
    "--max-steps",
    "2",
    "--builtin-size",
    "40",
    "--batch-size",
    "8",
    "--sample-steps",
    "2",
];

/// A fresh scratch folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rae-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fixture of the workspace (`tests/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Runs the binary on the CPU backend.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rae-cli"))
        .args(["--backend", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary, which must succeed; returns stderr.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rae-cli {args:?} failed:\n{err}");
    err
}

/// Runs the binary, which must fail without panicking; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "rae-cli {args:?} should have failed:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "rae-cli {args:?} panicked:\n{err}"
    );
    err
}

/// A DINOv2-style encoder of width `c`, patch `p`, pretraining grid `g`.
pub fn encoder_cfg(c: usize, p: usize, g: usize) -> Dinov2Config {
    Dinov2Config {
        hidden_size: c,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        mlp_ratio: 2.0,
        patch_size: p,
        image_size: p * g,
        num_register_tokens: 4,
        layer_norm_eps: 1e-6,
        layerscale_value: 0.5,
        act: Unary::GeluErf,
    }
}

/// A decoder for tokens of width `c` on a `g×g` grid with patch `p`.
pub fn decoder_cfg(c: usize, p: usize, g: usize) -> DecoderConfig {
    DecoderConfig {
        hidden_size: c,
        decoder_hidden_size: 16,
        decoder_num_hidden_layers: 1,
        decoder_num_attention_heads: 2,
        decoder_intermediate_size: 32,
        patch_size: p,
        image_size: p * g,
        layer_norm_eps: 1e-12,
        num_channels: 3,
    }
}

/// An in-memory RAE (no statistics) of width `c` on a `g×g` grid of patch `p` (images of
/// side `p·g`).
pub fn tiny_rae(b: &CpuBackend, c: usize, p: usize, g: usize) -> Rae<CpuBackend> {
    let enc = Dinov2Encoder::new(b, &mut Init::new(21), encoder_cfg(c, p, g)).unwrap();
    let dec = RaeDecoder::new(b, &mut Init::new(22), decoder_cfg(c, p, g)).unwrap();
    let (image_mean, image_std) = rae_core::models::Encoder::from(enc.clone()).image_mean_std();
    Rae {
        encoder: enc.into(),
        decoder: dec,
        stats: None,
        encoder_input_size: p * g,
        image_mean,
        image_std,
    }
}

/// Writes `rae` as a RAE folder (`encoder/`, `decoder.safetensors`, and with `stats` the
/// exact statistics over 40 built-in images as `stats.safetensors`).
pub fn write_rae_dir(b: &CpuBackend, rae: &Rae<CpuBackend>, dir: &Path, stats: bool) {
    rae_cli::store::encoders::save_encoder_dir(b, &rae.encoder, &dir.join("encoder")).unwrap();
    rae_cli::store::save_decoder(b, &rae.decoder, &dir.join("decoder.safetensors")).unwrap();
    if stats {
        let ds = Shapes::new(rae.decoder.config.image_size, 40, 7);
        let (mean, var) = compute_stats(b, rae, &ds, 16, StatsRule::Exact, false, 0).unwrap();
        save_stats(
            &dir.join("stats.safetensors"),
            &mean,
            &var,
            rae.latent_dims(),
        )
        .unwrap();
    }
}
