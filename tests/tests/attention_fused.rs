//! The fused (flash) attention of the Cube backends against the CPU backend's composite
//! attention: `Backend::attention_fused` (output and saved row log-sum-exp) and
//! `Backend::attention_fused_backward` (dq, dk, dv) on awkward token counts (1, 17, 257,
//! 261, 1025), head dims 32, 64, 128 and the ones the models use (72 for DiT-DH-XL's
//! backbone, 4, 8, 16 for the test models) or that run in a larger variant (100), with
//! batch × heads > 1; plus the switch back to the composite path (`RAE_ATTENTION=composite`,
//! `with_attention`), the fallback for head dims the kernels do not take, and shape errors.
//!
//! Outputs are pre-filled with NaN (see `Ctx::poison`), so an unwritten element fails.
//! Run: `XDG_RUNTIME_DIR=/tmp RAE_REQUIRE_WGPU=1 cargo test -p rae-tests --test
//! attention_fused -- --nocapture` (the `WORST` lines are the error table).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::{AttentionState, Backend};
use rae_core::{CpuBackend, Tensor};
use rae_kernels::cubecl::Runtime;
use rae_kernels::{AttentionKernel, CubeBackend};
use rae_tests::conformance::{cuda_or_skip, wgpu_or_skip, Ctx, Tol};

/// Output and gradients: the tolerance of the composite attention's conformance test.
const TOL: Tol = Tol::new(5e-5, 1e-4);
/// The log-sum-exp against an f64 evaluation on the host.
const TOL_LSE: Tol = Tol::new(2e-5, 2e-6);

/// `[B, H, N, hd]` cases and the range of q and k.
const CASES: &[([usize; 4], f32)] = &[
    ([3, 1, 1, 32], 1.5),
    ([2, 3, 17, 64], 1.5),
    ([1, 2, 257, 128], 1.5),
    ([2, 2, 261, 32], 1.5),
    ([1, 2, 261, 64], 4.0),
    ([1, 1, 1025, 128], 1.5),
    ([2, 2, 257, 72], 1.5),
    ([2, 2, 17, 4], 1.5),
    ([1, 3, 33, 8], 1.5),
    ([2, 1, 65, 16], 1.5),
    ([1, 2, 33, 100], 1.5),
];

/// `log Σ_c exp(scale·q_r·k_c)` per row, in f64 on the host.
fn host_lse(q: &[f32], k: &[f32], heads: usize, n: usize, hd: usize, scale: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * n);
    for h in 0..heads {
        let base = h * n * hd;
        for r in 0..n {
            let qr = &q[base + r * hd..base + (r + 1) * hd];
            let s: Vec<f64> = (0..n)
                .map(|c| {
                    let kc = &k[base + c * hd..base + (c + 1) * hd];
                    let dot: f64 = qr.iter().zip(kc).map(|(a, b)| *a as f64 * *b as f64).sum();
                    dot * scale as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
            out.push((m + sum.ln()) as f32);
        }
    }
    out
}

/// Forward and backward of `attention_fused` on `b` against the CPU's composite attention;
/// `fused` says whether `b` must have kept the log-sum-exp (a Cube backend) or the
/// probabilities (the CPU).
fn fused_vs_cpu<B: Backend>(b: &B, fused: bool) {
    let mut cx = Ctx::new(b, "attention_fused");
    for &(dims, range) in CASES {
        let [bs, h, n, hd] = dims;
        let numel = bs * h * n * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let (q, qc) = cx.rand(&dims, -range, range);
        let (k, kc) = cx.rand(&dims, -range, range);
        let (v, vc) = cx.rand(&dims, -1.0, 1.0);
        let (dout, doutc) = cx.rand(&dims, -1.0, 1.0);
        cx.poison(numel);
        let start = std::time::Instant::now();
        let (o, state) = b.attention_fused(&q, &k, &v, scale).unwrap();
        let (oc, pc) = cx.cpu.attention(&qc, &kc, &vc, scale).unwrap();
        cx.poison(numel);
        let g = match &state {
            AttentionState::Lse(lse) => {
                assert!(fused, "{dims:?}: the CPU must keep the probabilities");
                assert_eq!(lse.dims(), &dims[..3], "lse shape");
                let want = host_lse(
                    &cx.cpu.download(&qc).unwrap(),
                    &cx.cpu.download(&kc).unwrap(),
                    bs * h,
                    n,
                    hd,
                    scale,
                );
                let got = b.download(lse).unwrap();
                cx.check_vals(&format!("lse {dims:?}"), &got, &want, TOL_LSE);
                let (a, r) = errors(&got, &want);
                eprintln!("LSE {dims:?}: {a:.1e}/{r:.1e}");
                b.attention_fused_backward(&q, &k, &v, &o, lse, &dout, scale)
                    .unwrap()
            }
            AttentionState::Probs(p) => {
                assert!(!fused, "{dims:?}: a Cube backend must fuse head dim {hd}");
                b.attention_backward(&q, &k, &v, p, &dout, scale).unwrap()
            }
        };
        b.sync().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let gc = cx
            .cpu
            .attention_backward(&qc, &kc, &vc, &pc, &doutc, scale)
            .unwrap();
        let mut line = format!("CASE {} {dims:?} q,k in ±{range} ({secs:.2} s):", b.name());
        for (what, got, want) in [
            ("out", &o, &oc),
            ("dq", &g.dq, &gc.dq),
            ("dk", &g.dk, &gc.dk),
            ("dv", &g.dv, &gc.dv),
        ] {
            cx.check(&format!("{what} {dims:?}"), got, want, TOL);
            let (a, r) = errors(&b.download(got).unwrap(), &cx.cpu.download(want).unwrap());
            line += &format!(" {what} {a:.1e}/{r:.1e}");
        }
        eprintln!("{line} (max abs / max rel where |want| > 1e-3)");
    }
    cx.report();
}

/// Largest absolute error and largest relative error over `|want| > 1e-3`.
fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    got.iter().zip(want).fold((0.0, 0.0), |(a, r), (&g, &w)| {
        let e = (g as f64 - w as f64).abs();
        let rel = if w.abs() > 1e-3 {
            e / w.abs() as f64
        } else {
            0.0
        };
        (f64::max(a, e), f64::max(r, rel))
    })
}

/// The composite setting keeps the probabilities and gives the CPU's numbers; a head dim
/// the kernels do not take falls back to it; the default is fused; shape errors match the
/// CPU's.
fn switch_and_fallback<R: Runtime>(b: &CubeBackend<R>) {
    let composite = b.clone().with_attention(AttentionKernel::Composite);
    let fused = b.clone().with_attention(AttentionKernel::Fused);
    let mut cx = Ctx::new(&composite, "attention_fused switch");
    for (backend, dims, want_lse) in [
        (&composite, [2usize, 2, 17, 32], false),
        (&fused, [1, 2, 9, 160], false),
        (&fused, [1, 1, 0, 32], false),
        (&fused, [1, 2, 9, 24], true),
    ] {
        let hd = dims[3];
        let scale = 1.0 / (hd as f32).sqrt();
        let (q, qc) = cx.rand(&dims, -1.5, 1.5);
        let (k, kc) = cx.rand(&dims, -1.5, 1.5);
        let (v, vc) = cx.rand(&dims, -1.0, 1.0);
        let (dout, doutc) = cx.rand(&dims, -1.0, 1.0);
        let (o, state) = backend.attention_fused(&q, &k, &v, scale).unwrap();
        let (oc, pc) = cx.cpu.attention(&qc, &kc, &vc, scale).unwrap();
        cx.check(&format!("out {dims:?}"), &o, &oc, TOL);
        let g = match (&state, want_lse) {
            (AttentionState::Lse(lse), true) => backend
                .attention_fused_backward(&q, &k, &v, &o, lse, &dout, scale)
                .unwrap(),
            (AttentionState::Probs(p), false) => {
                let pb = backend.download(p).unwrap();
                cx.check_vals(
                    &format!("probabilities {dims:?}"),
                    &pb,
                    &cx.cpu.download(&pc).unwrap(),
                    TOL,
                );
                backend
                    .attention_backward(&q, &k, &v, p, &dout, scale)
                    .unwrap()
            }
            _ => panic!("{dims:?}: expected the log-sum-exp: {want_lse}"),
        };
        let gc = cx
            .cpu
            .attention_backward(&qc, &kc, &vc, &pc, &doutc, scale)
            .unwrap();
        cx.check(&format!("dq {dims:?}"), &g.dq, &gc.dq, TOL);
        cx.check(&format!("dk {dims:?}"), &g.dk, &gc.dk, TOL);
        cx.check(&format!("dv {dims:?}"), &g.dv, &gc.dv, TOL);
    }
    // The default follows RAE_ATTENTION, fused when unset.
    let want = AttentionKernel::from_env();
    assert_eq!(b.attention_kernel(), want);
    // The backward's shape checks read like the CPU's.
    let z = |d: &[usize]| b.zeros(d).unwrap();
    let zc = |d: &[usize]| cx.cpu.zeros(d).unwrap();
    let d = [1usize, 2, 5, 8];
    let bad_lse = b
        .attention_fused_backward(&z(&d), &z(&d), &z(&d), &z(&d), &z(&[1, 2, 4]), &z(&d), 1.0)
        .unwrap_err();
    let cpu_err = cx
        .cpu
        .attention_fused_backward(
            &zc(&d),
            &zc(&d),
            &zc(&d),
            &zc(&d),
            &zc(&[1, 2, 4]),
            &zc(&d),
            1.0,
        )
        .unwrap_err();
    assert_eq!(bad_lse, cpu_err);
    assert!(bad_lse.to_string().contains("lse"), "{bad_lse}");
}

#[test]
fn parse_attention_setting() {
    assert_eq!(
        AttentionKernel::parse("Composite"),
        Some(AttentionKernel::Composite)
    );
    assert_eq!(
        AttentionKernel::parse("fused"),
        Some(AttentionKernel::Fused)
    );
    assert_eq!(AttentionKernel::parse("fast"), None);
    assert_eq!(AttentionKernel::default(), AttentionKernel::Fused);
}

#[test]
fn cpu_keeps_probabilities() {
    fused_vs_cpu(&CpuBackend::new(), false);
    // The CPU's default backward from a log-sum-exp recomputes the probabilities.
    let cpu = CpuBackend::new();
    let mut cx = Ctx::new(&cpu, "attention_fused cpu default");
    let dims = [1usize, 2, 9, 8];
    let (q, _) = cx.rand(&dims, -1.0, 1.0);
    let (k, _) = cx.rand(&dims, -1.0, 1.0);
    let (v, _) = cx.rand(&dims, -1.0, 1.0);
    let (dout, _) = cx.rand(&dims, -1.0, 1.0);
    let (o, p) = cpu.attention(&q, &k, &v, 0.3).unwrap();
    let lse: Tensor<CpuBackend> = cpu.zeros(&dims[..3]).unwrap();
    let a = cpu
        .attention_fused_backward(&q, &k, &v, &o, &lse, &dout, 0.3)
        .unwrap();
    let b = cpu.attention_backward(&q, &k, &v, &p, &dout, 0.3).unwrap();
    for (x, y) in [(&a.dq, &b.dq), (&a.dk, &b.dk), (&a.dv, &b.dv)] {
        assert_eq!(cpu.download(x).unwrap(), cpu.download(y).unwrap());
    }
}

#[test]
fn wgpu_fused_matches_cpu() {
    if let Some(b) = wgpu_or_skip() {
        fused_vs_cpu(&b.clone().with_attention(AttentionKernel::Fused), true);
    }
}

#[test]
fn wgpu_switch_and_fallback() {
    if let Some(b) = wgpu_or_skip() {
        switch_and_fallback(b);
    }
}

#[test]
fn cuda_fused_matches_cpu() {
    if let Some(b) = cuda_or_skip() {
        fused_vs_cpu(&b.clone().with_attention(AttentionKernel::Fused), true);
    }
}

#[test]
fn cuda_switch_and_fallback() {
    if let Some(b) = cuda_or_skip() {
        switch_and_fallback(b);
    }
}
