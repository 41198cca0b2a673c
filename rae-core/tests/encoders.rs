//! The SigLIP and MAE encoders (§2.3): parity with HuggingFace `transformers` on the fixtures
//! written by `tools/make_encoder_fixtures.py`, loading by checkpoint name (round trip,
//! missing / unexpected / mis-shaped tensors), the final norm without affine, and MAE's
//! position-table resize against the §2.1.1 bicubic formula written out here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::json::{parse_named, JsonValue};
use rae_core::models::{
    DecoderConfig, Encoder, MaeConfig, MaeEncoder, Rae, RaeDecoder, SiglipConfig, SiglipEncoder,
    SiglipPatch,
};
use rae_core::nn::tables::sincos_2d;
use rae_core::nn::{save_module, HostTensor, HostTensors, Init, Module};
use rae_core::safetensors::SafeTensors;
use rae_core::{Backend, CpuBackend, Tensor, Unary};

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

fn json(name: &str) -> JsonValue {
    parse_named(&String::from_utf8(fixture(name)).unwrap(), name).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// A RAE around `encoder` with a random decoder of the matching width and grid, to run the
/// reference's encode path (resize, the family's mean/std, encoder).
fn rae_for(b: &CpuBackend, encoder: Encoder<CpuBackend>, input: usize) -> Rae<CpuBackend> {
    let (mean, std) = encoder.image_mean_std();
    let g = input / encoder.patch_size();
    let dec = DecoderConfig {
        hidden_size: encoder.hidden_size(),
        decoder_hidden_size: 16,
        decoder_num_hidden_layers: 1,
        decoder_num_attention_heads: 2,
        decoder_intermediate_size: 32,
        patch_size: 2,
        image_size: 2 * g,
        layer_norm_eps: 1e-12,
        num_channels: 3,
    };
    Rae {
        decoder: RaeDecoder::new(b, &mut Init::new(9), dec).unwrap(),
        encoder,
        stats: None,
        encoder_input_size: input,
        image_mean: mean,
        image_std: std,
    }
}

fn siglip_fixture(b: &CpuBackend) -> SiglipEncoder<CpuBackend> {
    let cfg = SiglipConfig::from_json(&json("siglip/config.json"), "siglip/config.json").unwrap();
    let mut m = SiglipEncoder::new(b, &mut Init::new(1), cfg).unwrap();
    let w = HostTensors::from_safetensors(&fixture("siglip/model.safetensors"), "siglip").unwrap();
    let report = m.load(b, &w).unwrap();
    assert_eq!(report.loaded, m.param_names().len());
    // The attention-pooling head is reported, not loaded; the text tower is not looked at.
    assert_eq!(report.unexpected.len(), 11, "{:?}", report.unexpected);
    assert!(report.unexpected.iter().all(|n| n.starts_with("head.")));
    m
}

fn mae_fixture(b: &CpuBackend) -> MaeEncoder<CpuBackend> {
    let cfg = MaeConfig::from_json(&json("mae/config.json"), "mae/config.json").unwrap();
    let mut m = MaeEncoder::new(b, &mut Init::new(1), cfg).unwrap();
    let w = HostTensors::from_safetensors(&fixture("mae/model.safetensors"), "mae").unwrap();
    m.load(b, &w).unwrap();
    m
}

#[test]
fn siglip_tokens_match_transformers() {
    let b = CpuBackend::new();
    let enc = siglip_fixture(&b);
    assert_eq!(enc.config.act, Unary::GeluTanh);
    assert_eq!(enc.config.grid(), 8);
    let bytes = fixture("siglip_io.safetensors");
    let io = SafeTensors::parse(&bytes, "siglip_io.safetensors").unwrap();
    let images = b
        .upload(&io.read_f32("images").unwrap(), &[2, 3, 36, 36])
        .unwrap();
    let enc: Encoder<CpuBackend> = enc.into();
    assert_eq!(enc.image_mean_std(), ([0.5; 3], [0.5; 3]));
    // Input 32: the 8×8 table is used as is; input 40: it is resized to 10×10.
    for (key, input, n) in [("tokens", 32, 64), ("tokens_i40", 40, 100)] {
        let rae = rae_for(&b, enc.clone(), input);
        let t = rae.encode_tokens(&b, &images).unwrap();
        assert_eq!(t.dims(), &[2, n, 32]);
        let err = max_abs(&b.download(&t).unwrap(), &io.read_f32(key).unwrap());
        eprintln!("SigLIP {key}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "SigLIP {key}: max abs error {err}");
    }
}

#[test]
fn mae_tokens_match_transformers() {
    let b = CpuBackend::new();
    let enc = mae_fixture(&b);
    assert_eq!(enc.config.grid(), 7);
    assert_eq!(enc.config.layer_norm_eps, 1e-12);
    let bytes = fixture("mae_io.safetensors");
    let io = SafeTensors::parse(&bytes, "mae_io.safetensors").unwrap();
    let images = b
        .upload(&io.read_f32("images").unwrap(), &[2, 3, 36, 36])
        .unwrap();
    let enc: Encoder<CpuBackend> = enc.into();
    assert_eq!(
        enc.image_mean_std(),
        (
            rae_core::models::rae::IMAGENET_MEAN,
            rae_core::models::rae::IMAGENET_STD
        )
    );
    let rae = rae_for(&b, enc, 32);
    let t = rae.encode_tokens(&b, &images).unwrap();
    assert_eq!(t.dims(), &[2, 64, 32]);
    let err = max_abs(&b.download(&t).unwrap(), &io.read_f32("tokens").unwrap());
    eprintln!("MAE tokens: max abs error {err:.3e}");
    assert!(err <= 1e-4, "MAE tokens: max abs error {err}");
}

#[test]
fn mae_sincos_table_of_a_new_model_is_the_one_transformers_writes() {
    let b = CpuBackend::new();
    let file = HostTensors::from_safetensors(&fixture("mae/model.safetensors"), "mae").unwrap();
    let from_hf = &file.get("vit.embeddings.position_embeddings").unwrap().data;
    let fresh = MaeEncoder::new(
        &b,
        &mut Init::new(5),
        MaeConfig::from_json(&json("mae/config.json"), "mae").unwrap(),
    )
    .unwrap();
    let ours = b.download(&fresh.position_embeddings.value).unwrap();
    let err = max_abs(&ours, from_hf);
    assert!(err <= 1e-6, "sin-cos table differs by {err}");
}

#[test]
fn siglip2_naflex_tokens_match_transformers() {
    let b = CpuBackend::new();
    let cfg = SiglipConfig::from_json(&json("siglip2/config.json"), "siglip2").unwrap();
    assert_eq!(cfg.patch, SiglipPatch::Linear);
    assert_eq!((cfg.image_size, cfg.grid()), (32, 8));
    let mut m = SiglipEncoder::new(&b, &mut Init::new(1), cfg).unwrap();
    let w =
        HostTensors::from_safetensors(&fixture("siglip2/model.safetensors"), "siglip2").unwrap();
    m.load(&b, &w).unwrap();
    let bytes = fixture("siglip2_io.safetensors");
    let io = SafeTensors::parse(&bytes, "siglip2_io.safetensors").unwrap();
    let x = b
        .upload(&io.read_f32("pixels").unwrap(), &[2, 3, 32, 32])
        .unwrap();
    let t = m.forward(&b, &x).unwrap();
    let err = max_abs(&b.download(&t).unwrap(), &io.read_f32("tokens").unwrap());
    eprintln!("SigLIP2 NaFlex tokens: max abs error {err:.3e}");
    assert!(err <= 1e-4, "SigLIP2 tokens: max abs error {err}");
    // Another grid than the table's is refused with a message naming the sizes.
    let x40 = b.zeros(&[1, 3, 40, 40]).unwrap();
    let e = m.forward(&b, &x40).unwrap_err().to_string();
    assert!(e.contains("10×10") && e.contains("8×8"), "{e}");
}

fn tiny_siglip() -> SiglipConfig {
    SiglipConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 24,
        patch_size: 4,
        image_size: 16,
        layer_norm_eps: 1e-6,
        act: Unary::GeluTanh,
        patch: SiglipPatch::Conv,
    }
}

fn tiny_mae() -> MaeConfig {
    MaeConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 24,
        patch_size: 4,
        image_size: 12,
        layer_norm_eps: 1e-12,
        act: Unary::GeluErf,
    }
}

fn round_trip(
    b: &CpuBackend,
    saved: &HostTensors,
    load: impl Fn(&HostTensors) -> (Encoder<CpuBackend>, usize),
    prefix: &str,
) -> Encoder<CpuBackend> {
    // Through safetensors bytes, as a file on disk would be, with an optional model prefix.
    let mut named = HostTensors::new();
    for (n, t) in saved.iter() {
        named.insert(format!("{prefix}{n}"), t.clone());
    }
    let bytes = named.to_safetensors(&[]).unwrap();
    let back = HostTensors::from_safetensors(&bytes, "round-trip").unwrap();
    let (enc, loaded) = load(&back);
    assert_eq!(loaded, saved.len());
    let again = save_module(b, &enc).unwrap();
    assert_eq!(
        again.names().collect::<Vec<_>>(),
        saved.names().collect::<Vec<_>>()
    );
    for (n, t) in saved.iter() {
        assert_eq!(again.get(n).unwrap(), t, "{n} changed in the round trip");
    }
    enc
}

#[test]
fn siglip_round_trips_by_name_with_and_without_the_vision_model_prefix() {
    let b = CpuBackend::new();
    let a = SiglipEncoder::new(&b, &mut Init::new(11), tiny_siglip()).unwrap();
    assert!(a
        .param_names()
        .iter()
        .all(|n| !n.contains("attention.attention")));
    assert!(a
        .param_names()
        .contains(&"encoder.layers.1.self_attn.out_proj.bias".to_string()));
    assert_eq!(a.num_params(true), 0, "the encoder is frozen");
    let saved = save_module(&b, &a).unwrap();
    let x = b
        .fill_normal(&[2, 3, 16, 16], rae_core::PhiloxKey::new(1, 2), 0)
        .unwrap();
    let ya = b.download(&a.forward(&b, &x).unwrap()).unwrap();
    for prefix in ["", "vision_model."] {
        let enc = round_trip(
            &b,
            &saved,
            |t| {
                let mut m = SiglipEncoder::new(&b, &mut Init::new(99), tiny_siglip()).unwrap();
                let r = m.load(&b, t).unwrap();
                (m.into(), r.loaded)
            },
            prefix,
        );
        let yb = b.download(&enc.forward(&b, &x).unwrap()).unwrap();
        assert_eq!(ya, yb, "outputs differ after loading (prefix {prefix:?})");
    }
}

#[test]
fn mae_round_trips_by_name_with_and_without_the_vit_prefix() {
    let b = CpuBackend::new();
    let a = MaeEncoder::new(&b, &mut Init::new(12), tiny_mae()).unwrap();
    assert_eq!(a.num_params(true), 0, "the encoder is frozen");
    let saved = save_module(&b, &a).unwrap();
    let x = b
        .fill_normal(&[2, 3, 16, 16], rae_core::PhiloxKey::new(1, 3), 0)
        .unwrap();
    let ya = b.download(&a.forward(&b, &x).unwrap()).unwrap();
    for prefix in ["", "vit."] {
        let enc = round_trip(
            &b,
            &saved,
            |t| {
                let mut m = MaeEncoder::new(&b, &mut Init::new(98), tiny_mae()).unwrap();
                let r = m.load(&b, t).unwrap();
                (m.into(), r.loaded)
            },
            prefix,
        );
        let yb = b.download(&enc.forward(&b, &x).unwrap()).unwrap();
        assert_eq!(ya, yb, "outputs differ after loading (prefix {prefix:?})");
    }
}

fn load_err_siglip(b: &CpuBackend, t: &HostTensors) -> String {
    let mut m = SiglipEncoder::new(b, &mut Init::new(1), tiny_siglip()).unwrap();
    m.load(b, t).unwrap_err().to_string()
}

fn load_err_mae(b: &CpuBackend, t: &HostTensors) -> String {
    let mut m = MaeEncoder::new(b, &mut Init::new(1), tiny_mae()).unwrap();
    m.load(b, t).unwrap_err().to_string()
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let b = CpuBackend::new();
    let s = save_module(
        &b,
        &SiglipEncoder::new(&b, &mut Init::new(1), tiny_siglip()).unwrap(),
    )
    .unwrap();
    let m = save_module(
        &b,
        &MaeEncoder::new(&b, &mut Init::new(1), tiny_mae()).unwrap(),
    )
    .unwrap();
    type ErrFn = fn(&CpuBackend, &HostTensors) -> String;
    for (saved, err, victim) in [
        (
            &s,
            load_err_siglip as ErrFn,
            "encoder.layers.1.self_attn.k_proj.weight",
        ),
        (
            &m,
            load_err_mae as ErrFn,
            "encoder.layer.0.attention.attention.value.bias",
        ),
    ] {
        // Missing.
        let mut t = saved.clone();
        t.remove(victim).unwrap();
        let e = err(&b, &t);
        assert!(e.contains("missing") && e.contains(victim), "{e}");
        // Mis-shaped.
        let mut t = saved.clone();
        t.insert(victim, HostTensor::new(vec![3, 5], vec![0.0; 15]).unwrap());
        let e = err(&b, &t);
        assert!(e.contains(victim) && e.contains("[3, 5]"), "{e}");
        // Unexpected.
        let mut t = saved.clone();
        t.insert(
            "encoder.layer.7.surprise",
            HostTensor::new(vec![1], vec![0.0]).unwrap(),
        );
        let e = err(&b, &t);
        assert!(e.contains("encoder.layer.7.surprise"), "{e}");
    }
    // The final norm's affine is optional (RAE ignores it); everything else is required.
    let mut t = s.clone();
    t.remove("post_layernorm.weight");
    t.remove("post_layernorm.bias");
    let mut enc = SiglipEncoder::new(&b, &mut Init::new(1), tiny_siglip()).unwrap();
    let r = enc.load(&b, &t).unwrap();
    assert_eq!(r.kept_buffers.len(), 2);
    // SigLIP's pooling head in a full checkpoint is reported, not loaded.
    let mut t = s.clone();
    t.insert(
        "head.probe",
        HostTensor::new(vec![1, 1, 16], vec![0.0; 16]).unwrap(),
    );
    let r = enc.load(&b, &t).unwrap();
    assert_eq!(r.unexpected, vec!["head.probe".to_string()]);
}

/// Mean and biased variance over channels of each token of `[B, N, C]`.
fn token_moments(b: &CpuBackend, t: &Tensor<CpuBackend>) -> Vec<(f64, f64)> {
    let c = *t.dims().last().unwrap();
    b.download(t)
        .unwrap()
        .chunks(c)
        .map(|row| {
            let m = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
            (m, v)
        })
        .collect()
}

#[test]
fn forward_shapes_and_the_final_norm_without_affine() {
    let b = CpuBackend::new();
    // Non-trivial final affine in the weights: the output must ignore it.
    let mut s = SiglipEncoder::new(&b, &mut Init::new(3), tiny_siglip()).unwrap();
    s.post_layernorm.weight.as_mut().unwrap().value = b.full(&[16], 3.0).unwrap();
    s.post_layernorm.bias.as_mut().unwrap().value = b.full(&[16], 0.7).unwrap();
    let mut m = MaeEncoder::new(&b, &mut Init::new(4), tiny_mae()).unwrap();
    m.layernorm.weight.as_mut().unwrap().value = b.full(&[16], 2.0).unwrap();
    m.layernorm.bias.as_mut().unwrap().value = b.full(&[16], -1.5).unwrap();
    let x = b
        .fill_normal(&[3, 3, 20, 24], rae_core::PhiloxKey::new(5, 6), 0)
        .unwrap();
    // SigLIP keeps all 5×6 tokens; MAE drops its CLS (forward_all has 1 + 30).
    let ts = s.forward(&b, &x).unwrap();
    assert_eq!(ts.dims(), &[3, 30, 16]);
    let tm = m.forward(&b, &x).unwrap();
    assert_eq!(tm.dims(), &[3, 30, 16]);
    assert_eq!(m.forward_all(&b, &x).unwrap().dims(), &[3, 31, 16]);
    for (name, t) in [("SigLIP", &ts), ("MAE", &tm)] {
        for (i, (mean, var)) in token_moments(&b, t).into_iter().enumerate() {
            assert!(mean.abs() < 1e-5, "{name} token {i}: mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "{name} token {i}: variance {var}");
        }
    }
    // A wrong input shape is an error naming the encoder.
    let bad = b.zeros(&[1, 3, 18, 16]).unwrap();
    assert!(s
        .forward(&b, &bad)
        .unwrap_err()
        .to_string()
        .contains("SigLIP"));
    assert!(m.forward(&b, &bad).unwrap_err().to_string().contains("MAE"));
}

/// Keys' cubic convolution kernel with a = −0.75 (§2.1.1).
fn keys(x: f64) -> f64 {
    let a = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        (a + 2.0) * x.powi(3) - (a + 3.0) * x.powi(2) + 1.0
    } else if x < 2.0 {
        a * x.powi(3) - 5.0 * a * x.powi(2) + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// One output sample of the §2.1.1 resize along an axis of `inp` samples.
fn resample(src: &dyn Fn(usize) -> f64, inp: usize, out: usize, i: usize) -> f64 {
    let scale = inp as f32 / out as f32;
    let s = (i as f32 + 0.5) * scale - 0.5;
    let i0 = s.floor();
    let f = (s - i0) as f64;
    let w = [keys(f + 1.0), keys(f), keys(1.0 - f), keys(2.0 - f)];
    (0..4)
        .map(|k| {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, inp as i64 - 1) as usize;
            w[k] * src(idx)
        })
        .sum()
}

#[test]
fn mae_position_resize_is_the_plain_bicubic_of_the_spec() {
    let b = CpuBackend::new();
    let mut m = MaeEncoder::new(&b, &mut Init::new(7), tiny_mae()).unwrap();
    let (d, g) = (16usize, 3usize);
    // A random table (CLS row + 3×3 grid) so every entry matters.
    let table: Vec<f32> = b
        .download(
            &b.fill_normal(&[1 + g * g, d], rae_core::PhiloxKey::new(8, 8), 0)
                .unwrap(),
        )
        .unwrap();
    m.position_embeddings.value = b.upload(&table, &[1, 1 + g * g, d]).unwrap();
    for (gh, gw) in [(3, 3), (4, 4), (5, 2), (2, 7), (8, 5)] {
        let got = b.download(&m.position_table(&b, gh, gw).unwrap()).unwrap();
        assert_eq!(got.len(), (1 + gh * gw) * d);
        assert_eq!(&got[..d], &table[..d], "the CLS row is kept as is");
        let mut worst = 0.0f64;
        for c in 0..d {
            let at = |i: usize, j: usize| table[(1 + i * g + j) * d + c] as f64;
            for i in 0..gh {
                for j in 0..gw {
                    // Along the width first, then along the height.
                    let row = |ii: usize| resample(&|jj| at(ii, jj), g, gw, j);
                    let want = resample(&row, g, gh, i);
                    let have = got[(1 + i * gw + j) * d + c] as f64;
                    worst = worst.max((want - have).abs());
                }
            }
        }
        assert!(worst <= 1e-5, "{g}→{gh}×{gw}: max abs error {worst}");
    }
    // The table of a fresh model is the 2-D sin-cos table with a zero CLS row.
    let fresh = MaeEncoder::new(&b, &mut Init::new(1), tiny_mae()).unwrap();
    let t = b.download(&fresh.position_embeddings.value).unwrap();
    assert!(t[..16].iter().all(|v| *v == 0.0));
    assert_eq!(&t[16..], &sincos_2d(16, 3).unwrap()[..]);
}

#[test]
fn configs_from_json_accept_every_layout_and_name_bad_keys() {
    // A vision-only SigLIP config, and a full one with the vision part nested.
    let vision = parse_named(
        r#"{"model_type":"siglip_vision_model","hidden_size":768,"intermediate_size":3072,
            "num_hidden_layers":12,"num_attention_heads":12,"patch_size":16,"image_size":256,
            "hidden_act":"gelu_pytorch_tanh","layer_norm_eps":1e-6}"#,
        "v.json",
    )
    .unwrap();
    assert_eq!(
        SiglipConfig::from_json(&vision, "v.json").unwrap(),
        SiglipConfig::base()
    );
    let full = JsonValue::object([
        ("model_type", JsonValue::from("siglip")),
        ("vision_config", vision.clone()),
        (
            "text_config",
            JsonValue::object([("hidden_size", 768usize)]),
        ),
    ]);
    assert_eq!(
        SiglipConfig::from_json(&full, "full.json").unwrap(),
        SiglipConfig::base()
    );
    // to_json reads back to the same configuration.
    for c in [SiglipConfig::base(), tiny_siglip()] {
        assert_eq!(SiglipConfig::from_json(&c.to_json(), "x").unwrap(), c);
    }
    for c in [MaeConfig::base(), tiny_mae()] {
        assert_eq!(MaeConfig::from_json(&c.to_json(), "x").unwrap(), c);
    }
    let bad = parse_named(r#"{"model_type":"vit_mae","hidden_act":"relu"}"#, "m.json").unwrap();
    let e = MaeConfig::from_json(&bad, "m.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m.json") && e.contains("hidden_act") && e.contains("relu"),
        "{e}"
    );
    let bad = parse_named(
        r#"{"vision_config":{"hidden_size":30,"num_attention_heads":4}}"#,
        "s.json",
    )
    .unwrap();
    let e = SiglipConfig::from_json(&bad, "s.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.json: vision_config") && e.contains("num_attention_heads"),
        "{e}"
    );
}
