//! Model-level checks beyond the fixtures: finite-difference gradients of whole tiny models,
//! loading by reference names, and clear errors for wrong checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rae_core::models::{DecoderConfig, DitConfig, DitDh, Mode, RaeDecoder};
use rae_core::nn::{save_module, Grads, HostTensors, Init, Module};
use rae_core::rng::PhiloxStream;
use rae_core::{Backend, CpuBackend, Error, Tensor};
use rae_tests::util::fixture;

type T = Tensor<CpuBackend>;

fn tiny_dit(plain: bool) -> DitConfig {
    DitConfig {
        input_size: 2,
        patch_size: 1,
        in_channels: 4,
        hidden_enc: 8,
        hidden_dec: if plain { 8 } else { 16 },
        depth_enc: 1,
        depth_dec: if plain { 0 } else { 1 },
        heads_enc: 2,
        heads_dec: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: 3,
        use_pos_embed: true,
    }
}

fn tiny_decoder() -> DecoderConfig {
    DecoderConfig {
        hidden_size: 6,
        decoder_hidden_size: 8,
        decoder_num_hidden_layers: 1,
        decoder_num_attention_heads: 2,
        decoder_intermediate_size: 12,
        patch_size: 2,
        image_size: 4,
        layer_norm_eps: 1e-6,
        num_channels: 3,
    }
}

/// Replaces every trainable parameter by N(0, std²) noise so no path is zero (like the
/// fixtures, which perturb the zero-initialised adaLN and output layers).
fn randomize<M: Module<CpuBackend>>(b: &CpuBackend, m: &mut M, seed: u64, std: f32) {
    let mut init = Init::new(seed);
    m.visit_mut(&mut |p| {
        if p.trainable() {
            let noise = init.normal(b, p.value.dims(), std).unwrap();
            p.value = b.axpy(1.0, &p.value, &noise).unwrap();
        }
    });
}

fn set_value(b: &CpuBackend, m: &mut impl Module<CpuBackend>, name: &str, idx: usize, delta: f32) {
    m.visit_mut(&mut |p| {
        if p.name == name {
            let mut v = b.download(&p.value).unwrap();
            v[idx] += delta;
            p.value = b.upload(&v, p.value.dims()).unwrap();
        }
    });
}

fn dot(a: &[f32], w: &[f32]) -> f64 {
    a.iter().zip(w).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Central differences of `loss` at coordinates picked by `rng`, compared with `grads`.
fn check_fd<M: Module<CpuBackend> + Clone>(
    b: &CpuBackend,
    model: &M,
    grads: &Grads<CpuBackend>,
    loss: &dyn Fn(&M) -> f64,
    rng: &mut PhiloxStream,
    picks: usize,
) -> f64 {
    let params: Vec<(String, usize)> = {
        let mut v = Vec::new();
        model.visit(&mut |p| {
            if p.trainable() {
                v.push((p.name.clone(), p.value.numel()));
            }
        });
        v
    };
    // Richardson-extrapolated central differences (steps h and h/2) cancel the h² term,
    // so strongly curved paths through the adaLN products stay accurate.
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for _ in 0..picks {
        let (name, n) = &params[(rng.uniform() * params.len() as f32) as usize % params.len()];
        let idx = (rng.uniform() * *n as f32) as usize % n;
        let central = |step: f32| {
            let mut plus = model.clone();
            set_value(b, &mut plus, name, idx, step);
            let mut minus = model.clone();
            set_value(b, &mut minus, name, idx, -step);
            (loss(&plus) - loss(&minus)) / (2.0 * step as f64)
        };
        let (d1, d2) = (central(h), central(h / 2.0));
        let fd = d2 + (d2 - d1) / 3.0;
        let g = grads
            .get(name)
            .map(|g| b.download(g).unwrap()[idx] as f64)
            .unwrap_or(0.0);
        // Relative error with an absolute floor for the f32 rounding noise of the loss.
        let err = (fd - g).abs() / (fd.abs().max(g.abs()).max(5e-2));
        assert!(
            err < 2e-2,
            "{name}[{idx}]: finite difference {fd} vs analytic {g}"
        );
        worst = worst.max(err);
    }
    worst
}

fn dit_case(plain: bool, seed: u64) -> f64 {
    let b = CpuBackend::new();
    let mut m = DitDh::new(&b, &mut Init::new(seed), tiny_dit(plain)).unwrap();
    randomize(&b, &mut m, seed + 1, 0.15);
    let mut rng = PhiloxStream::new(seed, 9);
    let mut xs = vec![0.0f32; 2 * 4 * 2 * 2];
    rng.normals(&mut xs);
    let x: T = b.upload(&xs, &[2, 4, 2, 2]).unwrap();
    let t = [rng.uniform(), rng.uniform()];
    let y = [1u32, 3]; // one real class, one null label
    let mut ws = vec![0.0f32; xs.len()];
    rng.normals(&mut ws);
    let loss = |m: &DitDh<CpuBackend>| {
        let (v, _) = m.forward(&b, &x, &t, &y, Mode::Infer).unwrap();
        dot(&b.download(&v).unwrap(), &ws)
    };
    let (_, saved) = m.forward(&b, &x, &t, &y, Mode::Train).unwrap();
    let mut grads = Grads::new();
    m.backward(
        &b,
        &saved.unwrap(),
        &b.upload(&ws, &[2, 4, 2, 2]).unwrap(),
        &mut grads,
    )
    .unwrap();
    check_fd(&b, &m, &grads, &loss, &mut rng, 12)
}

fn decoder_case(seed: u64) -> f64 {
    let b = CpuBackend::new();
    let mut m = RaeDecoder::new(&b, &mut Init::new(seed), tiny_decoder()).unwrap();
    randomize(&b, &mut m, seed + 1, 0.3);
    let mut rng = PhiloxStream::new(seed, 10);
    let mut ts = vec![0.0f32; 2 * 4 * 6];
    rng.normals(&mut ts);
    let tokens: T = b.upload(&ts, &[2, 4, 6]).unwrap();
    let mut ws = vec![0.0f32; 2 * 3 * 4 * 4];
    rng.normals(&mut ws);
    let loss = |m: &RaeDecoder<CpuBackend>| {
        let (img, _) = m.forward(&b, &tokens, Mode::Infer).unwrap();
        dot(&b.download(&img).unwrap(), &ws)
    };
    let (_, saved) = m.forward(&b, &tokens, Mode::Train).unwrap();
    let mut grads = Grads::new();
    m.backward(
        &b,
        &saved.unwrap(),
        &b.upload(&ws, &[2, 3, 4, 4]).unwrap(),
        &mut grads,
    )
    .unwrap();
    check_fd(&b, &m, &grads, &loss, &mut rng, 12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    #[test]
    fn dit_dh_gradients_match_finite_differences(seed in 0u64..1_000_000) {
        let worst = dit_case(false, seed);
        eprintln!("DiT-DH finite differences: worst relative error {worst:.2e}");
    }

    #[test]
    fn lightning_dit_gradients_match_finite_differences(seed in 0u64..1_000_000) {
        let worst = dit_case(true, seed);
        eprintln!("LightningDiT finite differences: worst relative error {worst:.2e}");
    }

    #[test]
    fn decoder_gradients_match_finite_differences(seed in 0u64..1_000_000) {
        let worst = decoder_case(seed);
        eprintln!("decoder finite differences: worst relative error {worst:.2e}");
    }
}

#[test]
fn dit_dh_init_follows_reference() {
    let b = CpuBackend::new();
    let m = DitDh::new(
        &b,
        &mut Init::new(5),
        DitConfig {
            num_classes: 10,
            ..tiny_dit(false)
        },
    )
    .unwrap();
    let get = |name: &str| {
        let mut out = None;
        m.visit(&mut |p| {
            if p.name == name {
                out = Some(b.download(&p.value).unwrap());
            }
        });
        out.unwrap_or_else(|| panic!("no parameter {name}"))
    };
    // adaLN-Zero and the zero output layer (§3.7): a fresh model predicts exactly zero.
    for n in [
        "blocks.0.adaLN_modulation.1.weight",
        "blocks.1.adaLN_modulation.1.bias",
        "final_layer.linear.weight",
        "final_layer.adaLN_modulation.1.bias",
    ] {
        assert!(get(n).iter().all(|v| *v == 0.0), "{n} is not zero");
    }
    let x = b.full(&[1, 4, 2, 2], 0.7).unwrap();
    let (v, _) = m.forward(&b, &x, &[0.3], &[2], Mode::Infer).unwrap();
    assert!(b.download(&v).unwrap().iter().all(|v| *v == 0.0));
    // Xavier bound on the patch embeddings, zero biases.
    let bound = (6.0f32 / (4.0 + 16.0)).sqrt();
    let w = get("x_embedder.proj.weight");
    assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > bound * 0.5));
    assert!(get("x_embedder.proj.bias").iter().all(|v| *v == 0.0));
    // Label table N(0, 0.02²): small.
    let tab = get("y_embedder.embedding_table.weight");
    let std = (tab.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / tab.len() as f64).sqrt();
    assert!(std > 0.01 && std < 0.03, "label table std {std}");
    // Default PyTorch init of qkv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let q = get("blocks.0.attn.qkv.weight");
    assert!(q.iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()));
    // RMSNorm weights are one.
    assert!(get("blocks.0.norm1.weight").iter().all(|v| *v == 1.0));
}

#[test]
fn checkpoints_round_trip_by_reference_names() {
    let b = CpuBackend::new();
    let mut a = DitDh::new(&b, &mut Init::new(1), tiny_dit(false)).unwrap();
    randomize(&b, &mut a, 2, 0.1);
    let saved = save_module(&b, &a).unwrap();
    let bytes = saved.to_safetensors(&[]).unwrap();
    let back = HostTensors::from_safetensors(&bytes, "roundtrip.safetensors").unwrap();
    let mut c = DitDh::new(&b, &mut Init::new(99), tiny_dit(false)).unwrap();
    let report = c.load(&b, &back).unwrap();
    assert_eq!(report.loaded, saved.len());
    assert_eq!(save_module(&b, &c).unwrap(), saved);
}

#[test]
fn wrong_checkpoints_are_rejected_with_named_errors() {
    let b = CpuBackend::new();
    // A decoder checkpoint into a DiT: every DiT tensor is missing, all named.
    let dec = HostTensors::from_safetensors(&fixture("decoder.safetensors"), "decoder.safetensors")
        .unwrap();
    let mut m = DitDh::new(&b, &mut Init::new(1), tiny_dit(false)).unwrap();
    match m.load(&b, &dec) {
        Err(Error::MissingTensors { model, names }) => {
            assert_eq!(model, "DiT-DH");
            assert!(names.iter().any(|n| n == "t_embedder.W"), "{names:?}");
        }
        other => panic!("expected missing tensors, got {other:?}"),
    }
    // The fixture DiT into a model of another size: a shape error naming the tensor.
    let dit =
        HostTensors::from_safetensors(&fixture("dit.safetensors"), "dit.safetensors").unwrap();
    let cfg = DitConfig {
        input_size: 4,
        in_channels: 8,
        hidden_enc: 32,
        hidden_dec: 64,
        depth_enc: 1,
        depth_dec: 2,
        heads_enc: 2,
        heads_dec: 2,
        mlp_ratio: 4.0,
        num_classes: 7,
        ..tiny_dit(false)
    };
    let mut m = DitDh::new(&b, &mut Init::new(1), cfg).unwrap();
    let err = m.load(&b, &dit).unwrap_err();
    assert!(
        matches!(err, Error::TensorShape { ref name, .. } if name == "y_embedder.embedding_table.weight"),
        "{err}"
    );
    assert!(
        err.to_string().contains("[8, 32]") && err.to_string().contains("[6, 32]"),
        "{err}"
    );
    // Extra tensors: a different model, reported by name.
    let mut extra = dit.clone();
    extra.insert(
        "decoder_pred.weight",
        rae_core::nn::HostTensor::new(vec![1], vec![0.0]).unwrap(),
    );
    let cfg = DitConfig {
        num_classes: 5,
        ..cfg_fixture()
    };
    let mut m = DitDh::new(&b, &mut Init::new(1), cfg).unwrap();
    let err = m.load(&b, &extra).unwrap_err().to_string();
    assert!(err.contains("decoder_pred.weight"), "{err}");
    // A truncated file names the file.
    let bytes = fixture("dit.safetensors");
    let err =
        HostTensors::from_safetensors(&bytes[..bytes.len() / 2], "dit.safetensors").unwrap_err();
    assert!(err.to_string().contains("dit.safetensors"), "{err}");
}

fn cfg_fixture() -> DitConfig {
    DitConfig {
        input_size: 4,
        in_channels: 8,
        hidden_enc: 32,
        hidden_dec: 64,
        depth_enc: 1,
        depth_dec: 2,
        heads_enc: 2,
        heads_dec: 2,
        mlp_ratio: 4.0,
        num_classes: 5,
        ..tiny_dit(false)
    }
}
