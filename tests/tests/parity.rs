//! Parity with the reference PyTorch implementation on the fixtures of `tests/fixtures/`
//! (see its README for how they were made and the tolerances).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::flow::{sample_ode, shifted_grid, Keep, OdeMethod};
use rae_core::json::parse_named;
use rae_core::models::{
    DecoderConfig, Dinov2Config, Dinov2Encoder, DitConfig, DitDh, Mode, RaeDecoder,
};
use rae_core::nn::{labels_from_i64, Grads, HostTensors, Init};
use rae_core::safetensors::SafeTensors;
use rae_core::{Backend, CpuBackend};
use rae_tests::util::{fixture, max_abs, rel_l2};

fn dit(b: &CpuBackend) -> DitDh<CpuBackend> {
    let cfg_text = String::from_utf8(fixture("dit_config.json")).unwrap();
    let cfg = DitConfig::from_json(
        &parse_named(&cfg_text, "dit_config.json").unwrap(),
        "dit_config.json",
    )
    .unwrap();
    let mut m = DitDh::new(b, &mut Init::new(1), cfg).unwrap();
    let w = HostTensors::from_safetensors(&fixture("dit.safetensors"), "dit.safetensors").unwrap();
    let report = m.load(b, &w).unwrap();
    assert!(
        report.kept_buffers.is_empty(),
        "buffers not loaded: {:?}",
        report.kept_buffers
    );
    m
}

#[test]
fn dit_dh_forward_loss_and_gradients_match_reference() {
    let b = CpuBackend::new();
    let m = dit(&b);
    let io_bytes = fixture("dit_io.safetensors");
    let io = SafeTensors::parse(&io_bytes, "dit_io.safetensors").unwrap();
    let x = b.upload(&io.read_f32("x").unwrap(), &[3, 8, 4, 4]).unwrap();
    let t = io.read_f32("t").unwrap();
    let y = labels_from_i64(&io.read_i64("y").unwrap()).unwrap();
    let (v, saved) = m.forward(&b, &x, &t, &y, Mode::Train).unwrap();
    let v = b.download(&v).unwrap();
    let v_ref = io.read_f32("v").unwrap();
    let err_v = max_abs(&v, &v_ref);
    eprintln!("DiT-DH output: max abs error {err_v:.3e}");
    assert!(err_v <= 1e-4, "DiT-DH output max abs error {err_v}");

    let target = io.read_f32("target").unwrap();
    let n = v.len() as f64;
    let loss: f64 = v
        .iter()
        .zip(&target)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / n;
    let loss_ref = io.read_f32("loss").unwrap()[0] as f64;
    let err_loss = (loss - loss_ref).abs() / loss_ref.abs();
    eprintln!("DiT-DH loss: {loss:.8} vs {loss_ref:.8}, relative error {err_loss:.3e}");
    assert!(err_loss <= 1e-5, "loss relative error {err_loss}");

    // d loss / d v = 2 (v - target) / numel.
    let dv: Vec<f32> = v
        .iter()
        .zip(&target)
        .map(|(a, b)| (2.0 * (*a as f64 - *b as f64) / n) as f32)
        .collect();
    let dv = b.upload(&dv, &[3, 8, 4, 4]).unwrap();
    let mut grads = Grads::new();
    m.backward(&b, &saved.unwrap(), &dv, &mut grads).unwrap();
    let gbytes = fixture("dit_grads.safetensors");
    let gref = SafeTensors::parse(&gbytes, "dit_grads.safetensors").unwrap();
    let mut worst = (0.0f64, String::new());
    for name in gref.names() {
        let r = gref.read_f32(name).unwrap();
        let g = grads
            .get(name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let e = rel_l2(&b.download(g).unwrap(), &r);
        if e > worst.0 {
            worst = (e, name.to_string());
        }
        assert!(e <= 1e-3, "gradient of {name}: relative error {e}");
    }
    assert_eq!(
        grads.len(),
        gref.len(),
        "gradients for parameters the reference has none for"
    );
    eprintln!(
        "DiT-DH gradients: worst relative error {:.3e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn dit_dh_euler6_sample_matches_reference() {
    let b = CpuBackend::new();
    let m = dit(&b);
    let bytes = fixture("ode_euler6.safetensors");
    let f = SafeTensors::parse(&bytes, "ode_euler6.safetensors").unwrap();
    let noise = b
        .upload(&f.read_f32("noise").unwrap(), &[2, 8, 4, 4])
        .unwrap();
    let y = labels_from_i64(&f.read_i64("y").unwrap()).unwrap();
    let s = f.read_f32("shift").unwrap()[0] as f64;
    let grid = shifted_grid(6, s, 0.001).unwrap();
    let mut field = |x: &rae_core::Tensor<CpuBackend>, t: f32| {
        m.forward(&b, x, &[t; 2], &y, Mode::Infer).map(|(v, _)| v)
    };
    let out = sample_ode(&b, &mut field, noise, &grid, OdeMethod::Euler, Keep::Last).unwrap();
    assert_eq!(out.evaluations, 5);
    let err = max_abs(&b.download(&out.x).unwrap(), &f.read_f32("sample").unwrap());
    eprintln!("Euler-6 sample: max abs error {err:.3e}");
    assert!(err <= 1e-4, "Euler sample max abs error {err}");
}

fn dinov2(b: &CpuBackend) -> Dinov2Encoder<CpuBackend> {
    let text = String::from_utf8(fixture("dinov2/config.json")).unwrap();
    let cfg = Dinov2Config::from_json(&parse_named(&text, "config.json").unwrap(), "config.json")
        .unwrap();
    let mut m = Dinov2Encoder::new(b, &mut Init::new(2), cfg).unwrap();
    let w =
        HostTensors::from_safetensors(&fixture("dinov2/model.safetensors"), "model.safetensors")
            .unwrap();
    m.load(b, &w).unwrap();
    m
}

fn decoder(b: &CpuBackend) -> RaeDecoder<CpuBackend> {
    let text = String::from_utf8(fixture("decoder_config.json")).unwrap();
    let cfg = DecoderConfig::from_json(
        &parse_named(&text, "decoder_config.json").unwrap(),
        "decoder_config.json",
    )
    .unwrap();
    let mut m = RaeDecoder::new(b, &mut Init::new(3), cfg).unwrap();
    let w = HostTensors::from_safetensors(&fixture("decoder.safetensors"), "decoder.safetensors")
        .unwrap();
    let report = m.load(b, &w).unwrap();
    assert!(report.kept_buffers.is_empty());
    m
}

#[test]
fn dinov2_tokens_through_rae_preprocessing_match_reference() {
    let b = CpuBackend::new();
    let rae = rae_core::models::Rae {
        encoder: dinov2(&b).into(),
        decoder: decoder(&b),
        stats: None,
        encoder_input_size: 224,
        image_mean: rae_core::models::rae::IMAGENET_MEAN,
        image_std: rae_core::models::rae::IMAGENET_STD,
    };
    let bytes = fixture("dinov2_io.safetensors");
    let io = SafeTensors::parse(&bytes, "dinov2_io.safetensors").unwrap();
    let images = b
        .upload(&io.read_f32("images").unwrap(), &[2, 3, 256, 256])
        .unwrap();
    let tokens = b
        .download(&rae.encode_tokens(&b, &images).unwrap())
        .unwrap();
    let err = max_abs(&tokens, &io.read_f32("tokens").unwrap());
    eprintln!("DINOv2 tokens: max abs error {err:.3e}");
    assert!(err <= 1e-4, "DINOv2 tokens max abs error {err}");
}

#[test]
fn decoder_logits_and_image_match_reference() {
    let b = CpuBackend::new();
    let m = decoder(&b);
    let bytes = fixture("decoder_io.safetensors");
    let io = SafeTensors::parse(&bytes, "decoder_io.safetensors").unwrap();
    let tokens = b
        .upload(&io.read_f32("tokens").unwrap(), &[2, 256, 32])
        .unwrap();
    let (logits, _) = m.forward_logits(&b, &tokens, Mode::Infer).unwrap();
    let err_l = max_abs(
        &b.download(&logits).unwrap(),
        &io.read_f32("logits").unwrap(),
    );
    let (img, _) = m.forward(&b, &tokens, Mode::Infer).unwrap();
    let err_i = max_abs(&b.download(&img).unwrap(), &io.read_f32("image").unwrap());
    eprintln!("decoder: logits max abs error {err_l:.3e}, image {err_i:.3e}");
    assert!(
        err_l <= 1e-4 && err_i <= 1e-4,
        "decoder errors {err_l} {err_i}"
    );
}
