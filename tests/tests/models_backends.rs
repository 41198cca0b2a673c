//! Whole models on every backend present (WGPU — a GPU or lavapipe — and CUDA), against the
//! CPU backend and the reference fixtures of `tests/fixtures/` (see its README): the
//! DiT-DH forward (§3), its loss gradients, the RAE decoder forward and backward (§2.6), a
//! 6-point Euler sample (§4.4) and one full stage-2 training step (§4.1–§4.3, §5.1).
//!
//! Written once as generic functions and instantiated per backend, like the conformance
//! suite; the CPU is instantiated too, as a check of the harness. A backend that is absent
//! prints `SKIPPED: ...`; `RAE_REQUIRE_WGPU=1` makes a missing WGPU adapter a failure.
//! The worst errors are printed as `WORST <backend> <what>: ...` (`--nocapture`).
//!
//! Run: `XDG_RUNTIME_DIR=/tmp RAE_REQUIRE_WGPU=1 cargo test -p rae-tests --test
//! models_backends -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::flow::{sample_ode, shifted_grid, Keep, OdeMethod, TimeDist};
use rae_core::json::parse_named;
use rae_core::models::{DecoderConfig, DitConfig, DitDh, Mode, RaeDecoder};
use rae_core::nn::{labels_from_i64, Grads, HostTensors, Init, Module};
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::safetensors::SafeTensors;
use rae_core::train::{stage2_step, Optimizer, OptimizerConfig, RngState, Stage2Config};
use rae_core::{Backend, Binary, CpuBackend, Tensor};
use rae_tests::conformance::{cuda_or_skip, wgpu_or_skip, Ctx, Tol};
use rae_tests::util::{fixture, max_abs, rel_l2};

/// The fixture DiT-DH (4×4×8 latents, backbone 32 × 1, head 64 × 2, 5 classes) on `b`.
fn dit<B: Backend>(b: &B) -> DitDh<B> {
    let text = String::from_utf8(fixture("dit_config.json")).unwrap();
    let cfg = DitConfig::from_json(
        &parse_named(&text, "dit_config.json").unwrap(),
        "dit_config.json",
    )
    .unwrap();
    let mut m = DitDh::new(b, &mut Init::new(1), cfg).unwrap();
    let w = HostTensors::from_safetensors(&fixture("dit.safetensors"), "dit.safetensors").unwrap();
    let report = m.load(b, &w).unwrap();
    assert!(
        report.kept_buffers.is_empty() && report.unexpected.is_empty(),
        "DiT fixture load: kept {:?}, unexpected {:?}",
        report.kept_buffers,
        report.unexpected
    );
    m
}

/// The fixture RAE decoder (width 32, 1 layer, patch 16, 256×256 output) on `b`.
fn decoder<B: Backend>(b: &B) -> RaeDecoder<B> {
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
    assert!(
        report.kept_buffers.is_empty(),
        "decoder fixture load: kept {:?}",
        report.kept_buffers
    );
    m
}

/// Trainable parameters of `m` by name, downloaded, in visiting order.
fn named_params<B: Backend, M: Module<B>>(b: &B, m: &M) -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    m.visit(&mut |p| {
        if p.trainable() {
            v.push((p.name.clone(), p.value.clone()));
        }
    });
    v.into_iter()
        .map(|(n, t)| (n, b.download(&t).unwrap()))
        .collect()
}

/// Euclidean norm.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Whether the gradient of parameter `name` is zero in exact arithmetic: a separate
/// attention key bias adds `q·b` to every score of a query, which the softmax cancels, so
/// its computed gradient is rounding noise and a relative error of it means nothing.
fn exactly_zero_grad(name: &str) -> bool {
    name.ends_with("attention.key.bias")
}

/// Checks every gradient of `got` against `want` (same names, same count) by relative L2
/// error (≤ `tol`); a gradient that is zero in exact arithmetic ([`exactly_zero_grad`])
/// must instead have a norm below 1e-6 of the whole gradient's, on both sides. Prints and
/// returns the worst relative error and its parameter's name.
fn check_grads<B: Backend>(
    b: &B,
    got: &Grads<B>,
    want: &[(String, Vec<f32>)],
    what: &str,
    tol: f64,
) -> (f64, String) {
    assert_eq!(
        got.len(),
        want.len(),
        "{} {what}: {} gradients, expected {}",
        b.name(),
        got.len(),
        want.len()
    );
    let total = want
        .iter()
        .map(|(_, w)| norm(w).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut worst = (0.0f64, String::new());
    let mut worst_zero = 0.0f64;
    for (name, w) in want {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("{} {what}: no gradient for {name}", b.name()));
        let g = b.download(g).unwrap();
        if exactly_zero_grad(name) {
            let (ng, nw) = (norm(&g), norm(w));
            assert!(
                ng <= 1e-6 * total && nw <= 1e-6 * total,
                "{} {what}: gradient of {name} must vanish: norms {ng:.3e} and {nw:.3e}, \
                 whole gradient {total:.3e}",
                b.name()
            );
            worst_zero = worst_zero.max(ng.max(nw) / total);
            continue;
        }
        let e = rel_l2(&g, w);
        assert!(
            e <= tol,
            "{} {what}: gradient of {name}: relative L2 error {e:.3e} > {tol:.0e}",
            b.name()
        );
        if e >= worst.0 {
            worst = (e, name.clone());
        }
    }
    eprintln!(
        "WORST {} {what}: rel-L2 {:.3e} ({}){}",
        b.name(),
        worst.0,
        worst.1,
        if worst_zero > 0.0 {
            format!(", vanishing gradients at {worst_zero:.1e} of the total")
        } else {
            String::new()
        }
    );
    worst
}

/// Downloaded gradients by name, sorted.
fn host_grads<B: Backend>(b: &B, g: &Grads<B>) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = g
        .iter()
        .map(|(n, t)| (n.clone(), b.download(t).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// DiT-DH eval forward on the fixture inputs: against the CPU element-wise and against the
/// reference `v`.
pub fn dit_eval_forward<B: Backend>(b: &B) {
    let cx = Ctx::new(b, "dit forward");
    let (m, mc) = (dit(b), dit(&cx.cpu));
    let bytes = fixture("dit_io.safetensors");
    let io = SafeTensors::parse(&bytes, "dit_io.safetensors").unwrap();
    let (x, xc) = cx.pair_from(&io.read_f32("x").unwrap(), &[3, 8, 4, 4]);
    let t = io.read_f32("t").unwrap();
    let y = labels_from_i64(&io.read_i64("y").unwrap()).unwrap();
    let (v, saved) = m.forward(b, &x, &t, &y, Mode::Infer).unwrap();
    assert!(saved.is_none(), "an eval forward keeps no activations");
    let (vc, _) = mc.forward(&cx.cpu, &xc, &t, &y, Mode::Infer).unwrap();
    // Outputs are O(1); the reference README's 1e-4 absolute holds for any f32
    // implementation whose reductions are ordered differently.
    cx.check("v vs CPU", &v, &vc, Tol::new(1e-4, 1e-4));
    let got = b.download(&v).unwrap();
    let err = max_abs(&got, &io.read_f32("v").unwrap());
    eprintln!("WORST {} dit forward vs reference: abs {err:.3e}", b.name());
    assert!(err <= 1e-4, "{}: v vs reference: {err:.3e}", b.name());
    cx.report();
}

/// The fixture loss `mean((v − target)²)` and every parameter gradient: against the CPU
/// backend's and against `dit_grads.safetensors` (relative L2 ≤ 1e-3 each).
pub fn dit_loss_and_gradients<B: Backend>(b: &B) {
    let cpu = CpuBackend::new();
    let bytes = fixture("dit_io.safetensors");
    let io = SafeTensors::parse(&bytes, "dit_io.safetensors").unwrap();
    let x = io.read_f32("x").unwrap();
    let t = io.read_f32("t").unwrap();
    let y = labels_from_i64(&io.read_i64("y").unwrap()).unwrap();
    let target = io.read_f32("target").unwrap();
    let dims = [3, 8, 4, 4];

    /// Loss (computed on the backend) and gradients.
    fn run<B: Backend>(
        b: &B,
        x: &[f32],
        t: &[f32],
        y: &[u32],
        target: &[f32],
        dims: &[usize],
    ) -> (f32, Grads<B>) {
        let m = dit(b);
        let x = b.upload(x, dims).unwrap();
        let target = b.upload(target, dims).unwrap();
        let (v, saved) = m.forward(b, &x, t, y, Mode::Train).unwrap();
        let diff = b.binary(Binary::Sub, &v, &target).unwrap();
        let n = diff.numel() as f32;
        let loss = b.scalar(&b.sum_sq_all(&diff).unwrap()).unwrap() / n;
        let dv = b.scale(&diff, 2.0 / n).unwrap();
        let mut grads = Grads::new();
        m.backward(b, &saved.unwrap(), &dv, &mut grads).unwrap();
        (loss, grads)
    }

    let (loss, grads) = run(b, &x, &t, &y, &target, &dims);
    let (loss_c, grads_c) = run(&cpu, &x, &t, &y, &target, &dims);
    let loss_ref = io.read_f32("loss").unwrap()[0];
    let e_cpu = ((loss - loss_c) / loss_c).abs() as f64;
    let e_ref = ((loss - loss_ref) / loss_ref).abs() as f64;
    eprintln!(
        "WORST {} dit loss: {loss:.8} (CPU {loss_c:.8}, reference {loss_ref:.8}); relative \
         error vs CPU {e_cpu:.3e}, vs reference {e_ref:.3e}",
        b.name()
    );
    assert!(e_cpu <= 1e-5, "{}: loss vs CPU: {e_cpu:.3e}", b.name());
    assert!(
        e_ref <= 1e-5,
        "{}: loss vs reference: {e_ref:.3e}",
        b.name()
    );

    let want_cpu = host_grads(&cpu, &grads_c);
    check_grads(b, &grads, &want_cpu, "dit grads vs CPU", 1e-3);
    let gbytes = fixture("dit_grads.safetensors");
    let gref = SafeTensors::parse(&gbytes, "dit_grads.safetensors").unwrap();
    let want_ref: Vec<(String, Vec<f32>)> = gref
        .names()
        .into_iter()
        .map(|n| (n.to_string(), gref.read_f32(n).unwrap()))
        .collect();
    check_grads(b, &grads, &want_ref, "dit grads vs reference", 1e-3);
}

/// Decoder forward (logits, image) on the fixture tokens against the CPU and the reference,
/// and its backward (every parameter gradient and the token gradient) for a random image
/// cotangent against the CPU.
pub fn decoder_forward_and_backward<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "decoder");
    let (m, mc) = (decoder(b), decoder(&cx.cpu));
    let bytes = fixture("decoder_io.safetensors");
    let io = SafeTensors::parse(&bytes, "decoder_io.safetensors").unwrap();
    let (tok, tokc) = cx.pair_from(&io.read_f32("tokens").unwrap(), &[2, 256, 32]);
    let (logits, _) = m.forward_logits(b, &tok, Mode::Infer).unwrap();
    let (logits_c, _) = mc.forward_logits(&cx.cpu, &tokc, Mode::Infer).unwrap();
    let tol = Tol::new(1e-4, 1e-4);
    cx.check("logits vs CPU", &logits, &logits_c, tol);
    let (img, saved) = m.forward(b, &tok, Mode::Train).unwrap();
    let (img_c, saved_c) = mc.forward(&cx.cpu, &tokc, Mode::Train).unwrap();
    cx.check("image vs CPU", &img, &img_c, tol);
    let e_l = max_abs(
        &b.download(&logits).unwrap(),
        &io.read_f32("logits").unwrap(),
    );
    let e_i = max_abs(&b.download(&img).unwrap(), &io.read_f32("image").unwrap());
    eprintln!(
        "WORST {} decoder vs reference: logits abs {e_l:.3e}, image abs {e_i:.3e}",
        b.name()
    );
    assert!(
        e_l <= 1e-4 && e_i <= 1e-4,
        "{}: decoder vs reference: logits {e_l:.3e}, image {e_i:.3e}",
        b.name()
    );

    let (dimg, dimg_c) = cx.rand(&[2, 3, 256, 256], -1.0, 1.0);
    let mut grads = Grads::new();
    let dtok = m
        .backward(b, saved.as_ref().unwrap(), &dimg, &mut grads)
        .unwrap();
    let mut grads_c = Grads::new();
    let dtok_c = mc
        .backward(&cx.cpu, saved_c.as_ref().unwrap(), &dimg_c, &mut grads_c)
        .unwrap();
    // The token gradient sums 768 products per element: relative L2 like the weights.
    let e_tok = rel_l2(
        &b.download(&dtok).unwrap(),
        &cx.cpu.download(&dtok_c).unwrap(),
    );
    eprintln!("WORST {} decoder token grad: rel-L2 {e_tok:.3e}", b.name());
    assert!(e_tok <= 1e-3, "{}: token gradient: {e_tok:.3e}", b.name());
    let want = host_grads(&cx.cpu, &grads_c);
    assert_eq!(
        want.len(),
        named_params(&cx.cpu, &mc).len(),
        "the CPU backward must produce a gradient for every trainable parameter"
    );
    check_grads(b, &grads, &want, "decoder grads vs CPU", 1e-3);
    cx.report();
}

/// The reference 6-point Euler sample of `ode_euler6.safetensors` run on the backend.
pub fn euler6_sample<B: Backend>(b: &B) {
    let m = dit(b);
    let bytes = fixture("ode_euler6.safetensors");
    let f = SafeTensors::parse(&bytes, "ode_euler6.safetensors").unwrap();
    let noise = b
        .upload(&f.read_f32("noise").unwrap(), &[2, 8, 4, 4])
        .unwrap();
    let y = labels_from_i64(&f.read_i64("y").unwrap()).unwrap();
    let s = f.read_f32("shift").unwrap()[0] as f64;
    let grid = shifted_grid(6, s, 0.001).unwrap();
    let mut field =
        |x: &Tensor<B>, t: f32| m.forward(b, x, &[t; 2], &y, Mode::Infer).map(|(v, _)| v);
    let out = sample_ode(b, &mut field, noise, &grid, OdeMethod::Euler, Keep::Last).unwrap();
    assert_eq!(out.evaluations, 5, "6 grid points are 5 Euler steps");
    let err = max_abs(&b.download(&out.x).unwrap(), &f.read_f32("sample").unwrap());
    eprintln!(
        "WORST {} euler-6 sample vs reference: abs {err:.3e}",
        b.name()
    );
    assert!(err <= 1e-4, "{}: Euler-6 sample: {err:.3e}", b.name());
}

/// Learning rate of the stage-2 comparison (the tiny preset's).
const LR: f32 = 1e-3;

/// One stage-2 step of the fixture DiT-DH on the fixture latents, from the same state on
/// the backend and on the CPU: the loss, the gradient norm, the updated parameters and the
/// EMA must agree.
pub fn stage2_step_matches_cpu<B: Backend>(b: &B) {
    let cpu = CpuBackend::new();
    let bytes = fixture("dit_io.safetensors");
    let io = SafeTensors::parse(&bytes, "dit_io.safetensors").unwrap();
    let z = io.read_f32("x").unwrap();
    // The fixture's null label is replaced by a real class: stage 2 drops labels itself.
    let labels: Vec<u32> = labels_from_i64(&io.read_i64("y").unwrap())
        .unwrap()
        .iter()
        .map(|&l| l % 5)
        .collect();

    /// Returns (loss, grad norm, parameters before, parameters after, EMA after).
    #[allow(clippy::type_complexity)]
    fn run<B: Backend>(
        b: &B,
        z: &[f32],
        labels: &[u32],
    ) -> (
        f32,
        f32,
        Vec<(String, Vec<f32>)>,
        Vec<(String, Vec<f32>)>,
        Vec<Vec<f32>>,
    ) {
        let mut m = dit(b);
        let before = named_params(b, &m);
        let ocfg = OptimizerConfig {
            adamw: AdamWConfig {
                lr: LR,
                weight_decay: 0.01,
                ..AdamWConfig::default()
            },
            schedule: LrSchedule {
                base_lr: LR as f64,
                final_lr: LR as f64 * 0.1,
                warmup_steps: 0,
                decay_end_step: 100,
                warmup: Warmup::Constant,
                decay: Decay::Linear,
            },
            clip: Some(1.0),
            ema_decay: 0.995,
        };
        let mut opt = Optimizer::new(b, &m, ocfg).unwrap();
        let mut rng = RngState::new(11);
        let s2 = Stage2Config {
            time_dist: TimeDist::parse("logit-normal_0_1").unwrap(),
            shift: 2f64.sqrt(),
            label_dropout: 0.1,
            shard: Default::default(),
        };
        let z = b.upload(z, &[3, 8, 4, 4]).unwrap();
        let (loss, rep) = stage2_step(b, &mut m, &mut opt, &mut rng, &s2, &z, labels).unwrap();
        assert_eq!(opt.step(), 1);
        let after = named_params(b, &m);
        let ema = opt
            .ema
            .params()
            .iter()
            .map(|t| b.download(t).unwrap())
            .collect();
        (loss, rep.grad_norm, before, after, ema)
    }

    let (loss, norm, before, after, ema) = run(b, &z, &labels);
    let (loss_c, norm_c, _, after_c, ema_c) = run(&cpu, &z, &labels);
    let e_loss = ((loss - loss_c) / loss_c).abs() as f64;
    let e_norm = ((norm - norm_c) / norm_c).abs() as f64;
    assert!(
        e_loss <= 1e-5,
        "{}: stage-2 loss {loss} vs CPU {loss_c}",
        b.name()
    );
    assert!(
        e_norm <= 1e-4,
        "{}: stage-2 grad norm {norm} vs CPU {norm_c}",
        b.name()
    );

    // The first AdamW step moves each weight by about lr·sign(g): an element whose
    // gradient is within rounding of zero may step the other way on another backend, so
    // single elements may differ by up to 2·lr; compare the updates in relative L2 and
    // count the elements that differ by more than 1% of a step.
    let (mut worst_upd, mut worst_name) = (0.0f64, String::new());
    let (mut flipped, mut total) = (0usize, 0usize);
    let (mut worst_abs, mut moved) = (0.0f64, 0.0f64);
    for (((name, p0), (_, p)), (_, pc)) in before.iter().zip(&after).zip(&after_c) {
        let d: Vec<f32> = p.iter().zip(p0).map(|(a, b)| a - b).collect();
        let dc: Vec<f32> = pc.iter().zip(p0).map(|(a, b)| a - b).collect();
        let e = rel_l2(&d, &dc);
        if e >= worst_upd {
            (worst_upd, worst_name) = (e, name.clone());
        }
        worst_abs = worst_abs.max(max_abs(p, pc));
        flipped += d
            .iter()
            .zip(&dc)
            .filter(|(a, b)| (*a - *b).abs() > 0.01 * LR)
            .count();
        total += d.len();
        moved += dc.iter().map(|x| x.abs() as f64).sum::<f64>();
    }
    // A step that changed nothing would agree trivially: the mean CPU step must be a
    // sizeable fraction of the learning rate (AdamW's first step is about lr per weight).
    let mean_step = moved / total as f64;
    assert!(
        mean_step >= 0.5 * LR as f64,
        "the CPU stage-2 step moved the weights by {mean_step:.3e} on average (lr {LR})"
    );
    let e_ema = ema
        .iter()
        .zip(&ema_c)
        .map(|(a, c)| max_abs(a, c))
        .fold(0.0, f64::max);
    eprintln!(
        "WORST {} stage-2 step: loss rel {e_loss:.3e}, grad-norm rel {e_norm:.3e}, update \
         rel-L2 {worst_upd:.3e} ({worst_name}), parameter abs {worst_abs:.3e} (mean step \
         {mean_step:.2e}), EMA abs {e_ema:.3e}, {flipped} of {total} elements off by > 1% of a step",
        b.name()
    );
    assert!(
        worst_upd <= 1e-2,
        "{}: stage-2 update of {worst_name}: relative L2 {worst_upd:.3e} from the CPU's",
        b.name()
    );
    assert!(
        flipped * 1000 <= total,
        "{}: {flipped} of {total} parameter updates differ from the CPU's",
        b.name()
    );
    assert!(
        e_ema <= 1e-5,
        "{}: EMA differs from the CPU's by {e_ema:.3e}",
        b.name()
    );
}

/// One `#[test]` per model check for the backend `$get` returns.
macro_rules! instantiate {
    ($module:ident, $get:expr) => {
        mod $module {
            use super::*;
            instantiate!(@tests $get; dit_eval_forward, dit_loss_and_gradients,
                decoder_forward_and_backward, euler6_sample, stage2_step_matches_cpu);
        }
    };
    (@tests $get:expr; $($f:ident),* $(,)?) => {
        $(
            #[test]
            fn $f() {
                if let Some(b) = $get {
                    super::$f(&b);
                }
            }
        )*
    };
}

instantiate!(wgpu_backend, wgpu_or_skip().cloned());
instantiate!(cuda_backend, cuda_or_skip().cloned());
instantiate!(cpu_backend, Some(CpuBackend::new()));
