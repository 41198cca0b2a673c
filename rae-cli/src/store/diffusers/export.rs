//! Writing a RAE as a diffusers `AutoencoderRAE` folder that `AutoencoderRAE.from_pretrained`
//! loads: DINOv2 and MAE encoders under transformers 5's names, SigLIP under transformers 4's
//! `vision_model.` (see [`super::encoders`]).

use std::path::Path;

use rae_core::json::JsonValue;
use rae_core::models::Rae;
use rae_core::nn::{save_module, HostTensor, HostTensors};
use rae_core::Backend;

use super::{diffusers_pos_table, encoders, rename, DECODER_ATTN, POS_BASE, STD_EPS, WEIGHTS};
use crate::errors::{CliError, CliResult};
use crate::store::atomic::{save_safetensors, write_atomic};

/// The `s` whose f32 sum `s + 1e-5` is exactly `d` (diffusers' denominator), or the closest.
fn std_for(d: f32) -> f32 {
    let mut s = d - STD_EPS;
    for _ in 0..64 {
        let got = s + STD_EPS;
        if got == d {
            return s;
        }
        let next = if got < d {
            f32::from_bits(if s >= 0.0 {
                s.to_bits() + 1
            } else {
                s.to_bits() - 1
            })
        } else {
            f32::from_bits(if s > 0.0 {
                s.to_bits() - 1
            } else {
                s.to_bits() + 1
            })
        };
        if next == s || !next.is_finite() {
            break;
        }
        s = next;
    }
    s
}

/// `x` as the JSON number with the fewest digits that reads back to `x` in f32 (the
/// safetensors copy is the exact one diffusers loads).
fn short(x: f32) -> JsonValue {
    JsonValue::Number(format!("{x}").parse::<f64>().unwrap_or(x as f64))
}

/// `[C, h, w]` values as a nested JSON list.
fn nested(v: &[f32], dims: [usize; 3]) -> JsonValue {
    let [c, h, w] = dims;
    JsonValue::array((0..c).map(|ci| {
        JsonValue::array(
            (0..h).map(|y| JsonValue::array((0..w).map(|x| short(v[(ci * h + y) * w + x])))),
        )
    }))
}

fn refuse(what: &str) -> CliError {
    CliError::new(format!(
        "this RAE cannot be written as a diffusers AutoencoderRAE: {what}"
    ))
}

/// Writes `rae` into the folder `out` (`config.json` + `diffusion_pytorch_model.safetensors`).
pub fn save_diffusers_rae<B: Backend>(b: &B, rae: &Rae<B>, out: &Path) -> CliResult<()> {
    let enc = encoders::export_encoder(b, &rae.encoder, rae.encoder_input_size)
        .map_err(|e| refuse(&e.to_string()))?;
    let d = &rae.decoder.config;
    let [c, g, _] = rae.latent_dims();
    if !rae.encoder_input_size.is_multiple_of(enc.patch) || d.grid() != g || d.hidden_size != c {
        return Err(refuse(&format!(
            "the encoder input {} with patch {} does not give the decoder's {}×{} grid of width {}",
            rae.encoder_input_size,
            enc.patch,
            d.grid(),
            d.grid(),
            d.hidden_size
        )));
    }
    if d.layer_norm_eps != 1e-12 || d.num_channels != 3 {
        return Err(refuse(
            "diffusers fixes the decoder LayerNorm eps at 1e-12 and 3 channels",
        ));
    }

    let mut t = HostTensors::new();
    for (n, v) in enc.tensors.iter() {
        t.insert(format!("encoder.{n}"), v.clone());
    }
    let dec_t = rename(save_module(b, &rae.decoder)?, &DECODER_ATTN, true)?;
    if g != POS_BASE {
        let ours = b.download(&rae.decoder.pos.value)?;
        let theirs = diffusers_pos_table(d.decoder_hidden_size, g);
        let off = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if ours.len() != theirs.len() || off > 1e-6 {
            return Err(refuse(&format!(
                "diffusers recomputes the decoder position table with positions scaled by {POS_BASE}/grid, which differs from this decoder's on its {g}×{g} grid (by {off}); only a {POS_BASE}×{POS_BASE} grid, or a decoder read from diffusers, can be written"
            )));
        }
    }
    for (n, v) in dec_t.iter() {
        if n == "decoder_pos_embed" {
            continue; // recomputed by diffusers (not persistent)
        }
        t.insert(format!("decoder.{n}"), v.clone());
    }
    let n = c * g * g;
    let (mean, std) = match &rae.stats {
        Some(s) => {
            let mean = b.download(&s.mean)?;
            let var = b.download(&s.var)?;
            let std: Vec<f32> = var.iter().map(|v| std_for((v + s.eps).sqrt())).collect();
            (mean, std)
        }
        None => (vec![0.0; n], vec![std_for(1.0); n]),
    };
    if mean.len() != n {
        return Err(refuse(&format!(
            "its statistics hold {} values, not {n}",
            mean.len()
        )));
    }
    let dims = [c, g, g];
    t.insert(
        "_latents_mean",
        HostTensor::new(dims.to_vec(), mean.clone())?,
    );
    t.insert("_latents_std", HostTensor::new(dims.to_vec(), std.clone())?);
    t.insert(
        "encoder_mean",
        HostTensor::new(vec![1, 3, 1, 1], rae.image_mean.to_vec())?,
    );
    t.insert(
        "encoder_std",
        HostTensor::new(vec![1, 3, 1, 1], rae.image_std.to_vec())?,
    );

    let triple = |v: [f32; 3]| JsonValue::array(v.map(short));
    let cfg = JsonValue::object([
        ("_class_name", JsonValue::from("AutoencoderRAE")),
        ("_diffusers_version", "0.42.1".into()),
        ("decoder_hidden_size", d.decoder_hidden_size.into()),
        (
            "decoder_intermediate_size",
            d.decoder_intermediate_size.into(),
        ),
        (
            "decoder_num_attention_heads",
            d.decoder_num_attention_heads.into(),
        ),
        (
            "decoder_num_hidden_layers",
            d.decoder_num_hidden_layers.into(),
        ),
        ("encoder_hidden_size", enc.hidden.into()),
        ("encoder_input_size", rae.encoder_input_size.into()),
        ("encoder_norm_mean", triple(rae.image_mean)),
        ("encoder_norm_std", triple(rae.image_std)),
        ("encoder_num_hidden_layers", enc.layers.into()),
        ("encoder_patch_size", enc.patch.into()),
        ("encoder_type", enc.kind.into()),
        ("image_size", d.image_size.into()),
        ("latents_mean", nested(&mean, dims)),
        ("latents_std", nested(&std, dims)),
        ("noise_tau", 0.0f64.into()),
        ("num_channels", 3usize.into()),
        ("patch_size", d.patch_size.into()),
        ("reshape_to_2d", true.into()),
        ("scaling_factor", 1.0f64.into()),
        ("use_encoder_loss", false.into()),
    ]);
    std::fs::create_dir_all(out)
        .map_err(|e| crate::errors::io_error("cannot create the output folder", out, &e))?;
    write_atomic(&out.join("config.json"), cfg.to_json_string()?.as_bytes())?;
    save_safetensors(&out.join(WEIGHTS), &t, &[("format".into(), "pt".into())])
}
