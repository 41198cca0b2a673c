//! One stage-1 generator step and one discriminator step against the reference's
//! `src/train_stage1.py` (`tests/fixtures/gan_step.safetensors`, made by
//! `tools/make_gan_fixtures.py`): the reference decoder of `decoder.safetensors` on given
//! tokens, LPIPS with a tiny synthetic VGG, the tiny DINO discriminator of
//! `gan_disc.safetensors`, DiffAug with given uniforms. Checked: L1, LPIPS, the generator
//! loss, the adaptive weight λ, the total and every decoder gradient; the hinge loss, the
//! accuracy, every head gradient and the spectral-norm vectors after the step; on the CPU
//! and on WGPU (skipped without an adapter unless `RAE_REQUIRE_WGPU=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::Backend;
use rae_core::gan::disc::{DiscConfig, Discriminator};
use rae_core::gan::lpips::{Lpips, VggConfig};
use rae_core::models::{DecoderConfig, Dinov2Encoder, Encoder, Mode, Rae, RaeDecoder};
use rae_core::nn::{save_module, Grads, HostTensor, HostTensors, Init, ParamKind};
use rae_core::safetensors::SafeTensors;
use rae_core::train::{discriminator_objective, generator_objective, quantised_fake, GanConfig};
use rae_core::CpuBackend;
use rae_tests::conformance::wgpu_or_skip;
use rae_tests::synthetic::{hashes, synthetic_vgg};
use rae_tests::util::{fixture, max_abs, rel_l2};

fn parse(name: &'static str) -> SafeTensors<'static> {
    let bytes: &'static [u8] = Box::leak(fixture(name).into_boxed_slice());
    SafeTensors::parse(bytes, name).unwrap()
}

/// The tensors named `prefix…`, with the prefix removed when `strip`.
fn host_sub(f: &SafeTensors, prefix: &str, strip: bool) -> HostTensors {
    let mut out = HostTensors::new();
    for n in f.names() {
        if let Some(s) = n.strip_prefix(prefix) {
            let s = if strip { s } else { n };
            let t = f.tensor(n).unwrap();
            out.insert(
                s,
                HostTensor::new(t.shape.clone(), f.read_f32(n).unwrap()).unwrap(),
            );
        }
    }
    out
}

fn host(f: &SafeTensors, prefix: &str) -> HostTensors {
    host_sub(f, prefix, true)
}

fn scalar(f: &SafeTensors, name: &str) -> f32 {
    f.read_f32(name).unwrap()[0]
}

/// The fixture's decoder as the RAE's (the encoder is never run: the step starts at tokens).
fn rae<B: Backend>(b: &B, st: &SafeTensors) -> Rae<B> {
    let cfg_bytes = fixture("decoder_config.json");
    let cfg_v = rae_core::json::parse_named(
        std::str::from_utf8(&cfg_bytes).unwrap(),
        "decoder_config.json",
    )
    .unwrap();
    let cfg = DecoderConfig::from_json(&cfg_v, "decoder_config.json").unwrap();
    let mut decoder = RaeDecoder::new(b, &mut Init::new(0), cfg).unwrap();
    decoder
        .load(b, &host(&parse("decoder.safetensors"), ""))
        .unwrap();
    // The reference trains the decoder's position table in stage 1 (requires_grad_(True)).
    decoder.pos.kind = ParamKind::Trainable;
    let enc = Dinov2Encoder::new(
        b,
        &mut Init::new(0),
        rae_core::models::Dinov2Config {
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            patch_size: 16,
            image_size: 256,
            ..rae_core::models::Dinov2Config::base()
        },
    )
    .unwrap();
    let m = st.read_f32("image_mean").unwrap();
    let s = st.read_f32("image_std").unwrap();
    Rae {
        encoder_input_size: 256,
        image_mean: [m[0], m[1], m[2]],
        image_std: [s[0], s[1], s[2]],
        encoder: Encoder::from(enc),
        decoder,
        stats: None,
    }
}

fn lpips<B: Backend>(b: &B, st: &SafeTensors) -> Lpips<B> {
    let cfg = VggConfig::tiny();
    let vgg = synthetic_vgg(&cfg, 6f32.sqrt()).unwrap();
    let mut lin = HostTensors::new();
    for k in 0..5 {
        let t = st.tensor(&format!("lin{k}.weight")).unwrap();
        let v = st.read_f32(&format!("lin{k}.weight")).unwrap();
        lin.insert(
            format!("lin{k}.weight"),
            HostTensor::new(t.shape.clone(), v).unwrap(),
        );
    }
    let mut lp = Lpips::new(b, &cfg).unwrap();
    lp.load(b, &vgg, &lin).unwrap();
    lp
}

fn disc<B: Backend>(b: &B) -> Discriminator<B> {
    let f = parse("gan_disc.safetensors");
    let mut d = Discriminator::new(b, &mut Init::new(0), DiscConfig::tiny()).unwrap();
    d.load_backbone(b, &host(&f, "dino.")).unwrap();
    d.load_heads(b, &host_sub(&f, "heads.", false)).unwrap();
    d
}

/// Scalar `got` against the fixture's `name` within `tol` relative to its magnitude (and 1e-6).
fn check_scalar(b_name: &str, st: &SafeTensors, name: &str, got: f32, tol: f64) -> f64 {
    let want = scalar(st, name) as f64;
    let err = (got as f64 - want).abs() / want.abs().max(1e-6);
    eprintln!("{b_name} {name}: {got} vs {want} (rel {err:.2e})");
    assert!(err <= tol, "{b_name} {name}: {got} vs {want}");
    err
}

/// Each gradient in `grads` against `prefix{name}`: relative L2 within `tol`, or 1e-6
/// absolute where the reference gradient is zero up to rounding. Returns the worst rel L2.
fn check_grads<B: Backend>(
    b: &B,
    st: &SafeTensors,
    prefix: &str,
    grads: &Grads<B>,
    tol: f64,
) -> f64 {
    let mut worst = 0.0f64;
    let mut count = 0;
    for n in st.names() {
        let Some(name) = n.strip_prefix(prefix) else {
            continue;
        };
        let want = st.read_f32(n).unwrap();
        let got = b
            .download(
                grads
                    .get(name)
                    .unwrap_or_else(|| panic!("no gradient for {name}")),
            )
            .unwrap();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let (rel, abs) = (rel_l2(&got, &want), max_abs(&got, &want));
        if scale < 1e-6 {
            assert!(
                abs <= 1e-5,
                "{} {name}: abs {abs:.2e} on a zero gradient",
                b.name()
            );
        } else {
            assert!(rel <= tol, "{} {name}: rel L2 {rel:.2e}", b.name());
            worst = worst.max(rel);
        }
        count += 1;
    }
    assert!(count > 0, "no {prefix}* gradients in the fixture");
    eprintln!(
        "{} {prefix}*: {count} gradients, worst rel L2 {worst:.2e}",
        b.name()
    );
    worst
}

fn run<B: Backend>(b: &B) {
    let st = parse("gan_step.safetensors");
    let rae = rae(b, &st);
    let lp = lpips(b, &st);
    let mut d = disc(b);
    let g = GanConfig::default();
    let tok = st.tensor("tokens").unwrap();
    let tokens = b
        .upload(&st.read_f32("tokens").unwrap(), &tok.shape)
        .unwrap();
    let n = 2 * 3 * 256 * 256;
    let x: Vec<f32> = hashes("gan_step.x", n)
        .map(|z| (z >> 40) as f32 * (1.0 / 16_777_216.0))
        .collect();
    let images = b.upload(&x, &[2, 3, 256, 256]).unwrap();

    let (img_std, saved) = rae.decoder.forward(b, &tokens, Mode::Train).unwrap();
    let x_hat = rae.destandardize(b, &img_std).unwrap();
    let u = st.read_f32("gen.rand").unwrap();
    let (t, dimg) = generator_objective(
        b,
        &rae,
        saved.as_ref().unwrap(),
        &x_hat,
        &images,
        &g,
        Some(&lp),
        Some((&d, &u)),
    )
    .unwrap();
    let name = b.name();
    check_scalar(&name, &st, "gen.l1", t.l1, 1e-5);
    check_scalar(&name, &st, "gen.lpips", t.lpips, 1e-4);
    check_scalar(&name, &st, "gen.gan", t.gan, 1e-4);
    check_scalar(&name, &st, "gen.lambda", t.lambda, 1e-3);
    check_scalar(&name, &st, "gen.total", t.total, 1e-3);
    let mut grads = Grads::new();
    rae.decoder
        .backward(b, saved.as_ref().unwrap(), &dimg, &mut grads)
        .unwrap();
    check_grads(b, &st, "gen.grad.", &grads, 1e-3);

    let fake = quantised_fake(b, &rae, &tokens).unwrap();
    let real = b
        .bcast_affine(
            &images,
            Some(&b.full(&[1], 2.0).unwrap()),
            Some(&b.full(&[1], -1.0).unwrap()),
            [1, 1, n],
        )
        .unwrap();
    let (uf, ur) = (
        st.read_f32("disc.rand_fake").unwrap(),
        st.read_f32("disc.rand_real").unwrap(),
    );
    let (loss, acc, dgrads) =
        discriminator_objective(b, &mut d, &g, &fake, &real, &uf, &ur).unwrap();
    check_scalar(&name, &st, "disc.loss", loss, 1e-4);
    check_scalar(&name, &st, "disc.accuracy", acc, 1e-6);
    check_grads(b, &st, "disc.grad.", &dgrads, 1e-2);
    // The spectral-norm vectors after the step's two power iterations.
    let after = save_module(b, &d).unwrap();
    for n in st.names() {
        for (kind, key) in [("disc.u.", "weight_u"), ("disc.v.", "weight_v")] {
            if let Some(prefix) = n.strip_prefix(kind) {
                let got = &after.get(&format!("{prefix}.{key}")).unwrap().data;
                let err = max_abs(got, &st.read_f32(n).unwrap());
                assert!(err <= 1e-5, "{name} {n}: {err:.2e}");
            }
        }
    }
}

#[test]
fn one_gan_step_matches_the_reference_on_cpu() {
    run(&CpuBackend::new());
}

#[test]
fn one_gan_step_matches_the_reference_on_wgpu() {
    if let Some(b) = wgpu_or_skip() {
        run(b);
    }
}
