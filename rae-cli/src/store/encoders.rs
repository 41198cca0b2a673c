//! Encoder folders of every supported family, read and written (§2.2, §2.3): a HuggingFace folder with
//! `config.json` and `model.safetensors` (or `pytorch_model.bin` / `model.pt`), whose
//! `model_type` says which encoder it is.
//!
//! | `model_type` | encoder |
//! |---|---|
//! | `dinov2_with_registers` (or absent) | DINOv2 with registers |
//! | `siglip`, `siglip2`, `siglip_vision_model`, `siglip2_vision_model` | SigLIP / SigLIP2 vision tower |
//! | `vit_mae` | MAE ViT (`ViTMAEModel` or `ViTMAEForPreTraining`) |

use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::models::{
    Dinov2Config, Dinov2Encoder, Encoder, MaeConfig, MaeEncoder, SiglipConfig, SiglipEncoder,
};
use rae_core::nn::{Init, LoadReport};
use rae_core::Backend;

use super::tensor_file::{load_json, load_tensor_file};
use crate::errors::{CliError, CliResult, Context};

/// An encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// DINOv2 with registers (§2.2).
    Dinov2,
    /// SigLIP / SigLIP2 (§2.3).
    Siglip,
    /// MAE (§2.3).
    Mae,
}

/// The family named by a `config.json`'s `model_type` (`source` names the file in errors).
pub fn family_of(cfg: &JsonValue, source: &str) -> CliResult<Family> {
    match cfg.get("model_type").and_then(JsonValue::as_str) {
        None | Some("dinov2_with_registers") => Ok(Family::Dinov2),
        Some("siglip" | "siglip2" | "siglip_vision_model" | "siglip2_vision_model") => {
            Ok(Family::Siglip)
        }
        Some("vit_mae") => Ok(Family::Mae),
        Some(other) => Err(CliError::new(format!(
            "{source}: model_type {other:?} is not a supported encoder (dinov2_with_registers, siglip, siglip2, siglip_vision_model, vit_mae)"
        ))),
    }
}

/// An encoder configuration of any family.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    /// DINOv2 with registers.
    Dinov2(Dinov2Config),
    /// SigLIP.
    Siglip(SiglipConfig),
    /// MAE.
    Mae(MaeConfig),
}

impl EncoderConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> CliResult<Self> {
        let path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(CliError::new(format!(
                "the encoder folder {} does not exist (it should hold a HuggingFace config.json and model.safetensors)",
                dir.display()
            )));
        }
        let v = load_json(&path)?;
        let source = path.display().to_string();
        Ok(match family_of(&v, &source)? {
            Family::Dinov2 => EncoderConfig::Dinov2(Dinov2Config::from_json(&v, &source)?),
            Family::Siglip => EncoderConfig::Siglip(SiglipConfig::from_json(&v, &source)?),
            Family::Mae => EncoderConfig::Mae(MaeConfig::from_json(&v, &source)?),
        })
    }

    /// Token width and patch size.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            EncoderConfig::Dinov2(c) => (c.hidden_size, c.patch_size),
            EncoderConfig::Siglip(c) => (c.hidden_size, c.patch_size),
            EncoderConfig::Mae(c) => (c.hidden_size, c.patch_size),
        }
    }
}

fn weights_file(dir: &Path) -> CliResult<PathBuf> {
    ["model.safetensors", "pytorch_model.bin", "model.pt"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| {
            CliError::new(format!(
                "the encoder folder {} has no model.safetensors (nor pytorch_model.bin, model.pt)",
                dir.display()
            ))
        })
}

/// Loads an encoder folder of any supported family (detected from `config.json`).
pub fn load_encoder_dir<B: Backend>(b: &B, dir: &Path) -> CliResult<Encoder<B>> {
    let cfg = EncoderConfig::read(dir)?;
    let weights = weights_file(dir)?;
    let file = load_tensor_file(&weights)?;
    let what = format!("loading the encoder from {}", weights.display());
    let init = &mut Init::new(0);
    let (enc, report): (Encoder<B>, LoadReport) = match cfg {
        EncoderConfig::Dinov2(c) => {
            let mut e = Dinov2Encoder::new(b, init, c)?;
            let r = e.load(b, &file.tensors).context(&what)?;
            (e.into(), r)
        }
        EncoderConfig::Siglip(c) => {
            let mut e = SiglipEncoder::new(b, init, c)?;
            let r = e.load(b, &file.tensors).context(&what)?;
            (e.into(), r)
        }
        EncoderConfig::Mae(c) => {
            let mut e = MaeEncoder::new(b, init, c)?;
            let r = e.load(b, &file.tensors).context(&what)?;
            (e.into(), r)
        }
    };
    let _ = report;
    check_preprocessor(dir, &enc);
    Ok(enc)
}

/// Warns when the folder's `preprocessor_config.json` states another image mean/std than
/// the family's (the pipeline always uses the family's, §2.1, so that a decoder trained
/// with one RAE folder decodes with another of the same family).
fn check_preprocessor<B: Backend>(dir: &Path, enc: &Encoder<B>) {
    let path = dir.join("preprocessor_config.json");
    let Ok(v) = load_json(&path) else { return };
    let read = |k: &str| -> Option<Vec<f64>> {
        v.get(k)?
            .as_array()?
            .iter()
            .map(JsonValue::as_f64)
            .collect::<Option<Vec<f64>>>()
    };
    let (mean, std) = enc.image_mean_std();
    let close = |a: &Option<Vec<f64>>, b: &[f32; 3]| {
        a.as_ref().is_none_or(|a| {
            a.len() == 3 && a.iter().zip(b).all(|(x, y)| (x - *y as f64).abs() < 1e-6)
        })
    };
    if !close(&read("image_mean"), &mean) || !close(&read("image_std"), &std) {
        crate::say!(
            "warning: {} states an image mean/std other than the {} family's ({mean:?}, {std:?}); the family's values are used",
            path.display(),
            enc.family()
        );
    }
}

/// Writes an encoder as a HuggingFace-style folder (`config.json`, `model.safetensors`).
pub fn save_encoder_dir<B: Backend>(b: &B, enc: &Encoder<B>, dir: &Path) -> CliResult<()> {
    let cfg = match enc {
        Encoder::Dinov2(e) => {
            let c = &e.config;
            JsonValue::object([
                ("model_type", JsonValue::from("dinov2_with_registers")),
                ("hidden_size", c.hidden_size.into()),
                ("num_hidden_layers", c.num_hidden_layers.into()),
                ("num_attention_heads", c.num_attention_heads.into()),
                ("mlp_ratio", c.mlp_ratio.into()),
                ("patch_size", c.patch_size.into()),
                ("image_size", c.image_size.into()),
                ("num_register_tokens", c.num_register_tokens.into()),
                ("layer_norm_eps", (c.layer_norm_eps as f64).into()),
                ("layerscale_value", (c.layerscale_value as f64).into()),
                ("hidden_act", "gelu".into()),
            ])
        }
        Encoder::Siglip(e) => e.config.to_json(),
        Encoder::Mae(e) => e.config.to_json(),
    };
    let text = cfg.to_json_pretty()?;
    super::atomic::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    let tensors = rae_core::nn::save_module(b, enc)?;
    super::atomic::save_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        &[("format".into(), "pt".into())],
    )
}
