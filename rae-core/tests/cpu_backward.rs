//! Backward ops of [`CpuBackend`] against central finite differences, and the layout ops
//! against their adjoints.
//!
//! Method: random inputs `x`, a random cotangent `w`, the scalar `L = Σ w ⊙ f(x)` computed
//! in f64 from the f32 outputs; the analytic gradient is the backward op with `dy = w`, the
//! numerical one `(L(x + h·e_i) − L(x − h·e_i)) / (x_i⁺ − x_i⁻)` (the actual f32 step) on
//! every coordinate of small inputs and [`MAX_COORDS`] random ones of larger inputs. The
//! error of one input is `‖g_analytic − g_fd‖ / max(‖g_fd‖, FLOOR·√coords)`; a case fails
//! above [`TOL`]. Each test prints its worst error over all cases as
//! `FD worst <op> <error>` (run with `--nocapture`); `FD_DEBUG=1` prints every coordinate.
//!
//! f32 forward values give FD noise of about `2⁻²⁴·|f|·√outputs / 2h` per coordinate and
//! central differences a truncation error of `h²·f'''/6`; with the `h` chosen per op both
//! stay near 1e-4 relative, well under `TOL`, while a wrong formula (a missing term, a wrong
//! sign, a factor off by a few percent) lands above it (see
//! `fd_metric_rejects_wrong_gradients`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use rae_core::backend::{Backend, PatchOrder, Reduce, Unary};
use rae_core::CpuBackend;

mod common;
use common::{down, up, Gen, T};
const BE: CpuBackend = CpuBackend::new();

/// Relative error above which a gradient is wrong.
const TOL: f64 = 1e-2;
/// Absolute floor (per coordinate) of the reference norm, for gradients that are ~0.
const FLOOR: f64 = 1e-2;
/// Coordinates checked per input when it has more than this many.
const MAX_COORDS: usize = 24;

// ------------------------------------------------------------------------------ helpers

/// Proptest cases per property: 64, or `PROPTEST_CASES` when set (for longer soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Sizes for FD inputs: 1, small and odd.
fn sz() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 5, 7])
}

/// The FD relative error of each input's analytic gradient; returns the worst.
fn fd_error(
    inputs: &[Vec<f32>],
    analytic: &[Vec<f32>],
    w: &[f32],
    h: f64,
    g: &mut Gen,
    f: impl Fn(&[Vec<f32>]) -> Vec<f32>,
) -> f64 {
    assert_eq!(inputs.len(), analytic.len(), "one gradient per input");
    let loss = |xs: &[Vec<f32>]| -> f64 {
        let y = f(xs);
        assert_eq!(y.len(), w.len(), "output length vs cotangent");
        y.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let debug = std::env::var_os("FD_DEBUG").is_some();
    let mut worst = 0.0f64;
    let mut xs = inputs.to_vec();
    for (t, grad) in analytic.iter().enumerate() {
        let n = inputs[t].len();
        assert_eq!(grad.len(), n, "gradient {t} has the length of input {t}");
        if n == 0 {
            continue;
        }
        let coords: Vec<usize> = if n <= MAX_COORDS {
            (0..n).collect()
        } else {
            (0..MAX_COORDS).map(|_| g.below(n)).collect()
        };
        let (mut d2, mut r2) = (0.0f64, 0.0f64);
        for &i in &coords {
            let x0 = inputs[t][i];
            let (xp, xm) = ((x0 as f64 + h) as f32, (x0 as f64 - h) as f32);
            xs[t][i] = xp;
            let lp = loss(&xs);
            xs[t][i] = xm;
            let lm = loss(&xs);
            xs[t][i] = x0;
            let fd = (lp - lm) / (xp as f64 - xm as f64);
            if debug {
                eprintln!("input {t} [{i}] = {x0}: analytic {} vs fd {fd}", grad[i]);
            }
            d2 += (grad[i] as f64 - fd).powi(2);
            r2 += fd * fd;
        }
        let e = d2.sqrt() / r2.sqrt().max(FLOOR * (coords.len() as f64).sqrt());
        if e.is_nan() || e > worst {
            worst = e;
        }
    }
    worst
}

/// Runs [`cases`] proptest cases of `body` (which returns a relative error), fails a case
/// above `TOL`, and prints the worst error seen.
fn run_fd<S>(op: &str, strategy: S, body: impl Fn(S::Value) -> f64)
where
    S: Strategy,
    S::Value: Debug,
{
    run_metric("FD worst", op, TOL, strategy, body);
}

fn run_metric<S>(label: &str, op: &str, tol: f64, strategy: S, body: impl Fn(S::Value) -> f64)
where
    S: Strategy,
    S::Value: Debug,
{
    let worst = Cell::new(0.0f64);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |v| {
        let e = body(v);
        if e.is_nan() || e > worst.get() {
            worst.set(e);
        }
        prop_assert!(e <= tol, "{}: relative error {:e} above {:e}", op, e, tol);
        Ok(())
    });
    eprintln!("{label} {op:<34} {:.2e}", worst.get());
    if let Err(e) = result {
        panic!("{op}: {e}");
    }
}

// ------------------------------------------------------------------------ unary ops

fn fd_unary(op: Unary) {
    run_fd(
        &format!("unary {op:?}"),
        (sz(), sz(), any::<u64>()),
        |(a, b, seed)| {
            let mut g = Gen::new(seed);
            let n = a * b;
            let mut x = g.vec(n, -4.0, 4.0);
            if matches!(op, Unary::Abs | Unary::Relu | Unary::LeakyRelu) {
                // Keep away from the kink at 0, where FD and the subgradient differ.
                x.iter_mut()
                    .for_each(|v| *v = v.signum() * (0.05 + v.abs()));
            }
            let w = g.vec(n, -1.0, 1.0);
            let dx = BE
                .unary_backward(op, &up(&x, &[a, b]), &up(&w, &[a, b]))
                .unwrap();
            fd_error(&[x], &[down(&dx)], &w, 1e-2, &mut g, |xs| {
                down(&BE.unary(op, &up(&xs[0], &[a, b])).unwrap())
            })
        },
    );
}

#[test]
fn fd_unary_silu() {
    fd_unary(Unary::Silu);
}

#[test]
fn fd_unary_gelu_erf() {
    fd_unary(Unary::GeluErf);
}

#[test]
fn fd_unary_gelu_tanh() {
    fd_unary(Unary::GeluTanh);
}

#[test]
fn fd_unary_sigmoid() {
    fd_unary(Unary::Sigmoid);
}

#[test]
fn fd_unary_square() {
    fd_unary(Unary::Square);
}

#[test]
fn fd_unary_abs() {
    fd_unary(Unary::Abs);
}

#[test]
fn fd_unary_relu() {
    fd_unary(Unary::Relu);
    fd_unary(Unary::LeakyRelu);
}

/// ReLU: `max(x, 0)` keeping NaN; its gradient passes `dy` where `x > 0` and is 0 elsewhere
/// (at 0, at NaN, and for an infinite `dy`), as PyTorch's `threshold_backward`.
#[test]
fn relu_values_and_gradient_at_zero() {
    let x = up(&[0.0, -0.0, 2.0, -3.0, f32::NAN], &[5]);
    let y = down(&BE.unary(Unary::Relu, &x).unwrap());
    assert_eq!(&y[..4], &[0.0, 0.0, 2.0, 0.0]);
    assert!(y[4].is_nan());
    let dy = up(&[1.0, f32::INFINITY, 5.0, f32::INFINITY, 1.0], &[5]);
    let dx = BE.unary_backward(Unary::Relu, &x, &dy).unwrap();
    assert_eq!(down(&dx), vec![0.0, 0.0, 5.0, 0.0, 0.0]);
}

/// `|x|`'s derivative is `sign(x)` with 0 at 0 (the subgradient PyTorch uses).
#[test]
fn abs_gradient_at_zero() {
    let x = up(&[0.0, -0.0, 2.0, -3.0], &[4]);
    let dx = BE
        .unary_backward(Unary::Abs, &x, &up(&[1.0; 4], &[4]))
        .unwrap();
    assert_eq!(down(&dx), vec![0.0, 0.0, 1.0, -1.0]);
}

/// The metric separates right from wrong: a gradient 3% off, a missing term, or another
/// op's derivative all land above `TOL` on inputs where the right one passes.
#[test]
fn fd_metric_rejects_wrong_gradients() {
    let mut g = Gen::new(5);
    let n = 16;
    let inputs = [g.vec(n, -3.0, 3.0)];
    let x = &inputs[0];
    let w = g.vec(n, -1.0, 1.0);
    let f = |xs: &[Vec<f32>]| down(&BE.unary(Unary::Silu, &up(&xs[0], &[n])).unwrap());
    let grad = |op: Unary| down(&BE.unary_backward(op, &up(x, &[n]), &up(&w, &[n])).unwrap());
    let right = grad(Unary::Silu);
    let mut error_of = |dx: Vec<f32>| fd_error(&inputs, &[dx], &w, 1e-2, &mut g, f);
    assert!(error_of(right.clone()) < TOL);
    assert!(error_of(right.iter().map(|v| v * 1.03).collect()) > TOL);
    // SiLU' without the x·σ·(1 − σ) term.
    let missing: Vec<f32> = x
        .iter()
        .zip(&w)
        .map(|(&v, &d)| d / (1.0 + (-v).exp()))
        .collect();
    assert!(error_of(missing) > TOL);
    assert!(error_of(grad(Unary::GeluTanh)) > TOL);
}

// ----------------------------------------------------------------- linear and matmul

#[test]
fn fd_linear() {
    run_fd(
        "linear (dx, dw, db)",
        (
            sz(),
            sz(),
            any::<bool>(),
            sz(),
            sz(),
            any::<bool>(),
            any::<u64>(),
        ),
        |(r0, r1, rank3, inp, out, has_bias, seed)| {
            let mut g = Gen::new(seed);
            let rows = r0 * r1;
            let xd: Vec<usize> = if rank3 {
                vec![r0, r1, inp]
            } else {
                vec![rows, inp]
            };
            let mut yd = xd.clone();
            *yd.last_mut().unwrap() = out;
            let x = g.vec(rows * inp, -1.0, 1.0);
            let wt = g.vec(out * inp, -1.0, 1.0);
            let b = g.vec(out, -1.0, 1.0);
            let w = g.vec(rows * out, -1.0, 1.0);
            let gr = BE
                .linear_backward(&up(&x, &xd), &up(&wt, &[out, inp]), has_bias, &up(&w, &yd))
                .unwrap();
            assert_eq!(gr.dx.dims(), &xd[..]);
            assert_eq!(gr.dw.dims(), &[out, inp]);
            assert_eq!(gr.db.is_some(), has_bias);
            let mut inputs = vec![x, wt];
            let mut grads = vec![down(&gr.dx), down(&gr.dw)];
            if has_bias {
                inputs.push(b);
                grads.push(down(gr.db.as_ref().unwrap()));
            }
            fd_error(&inputs, &grads, &w, 1e-2, &mut g, |xs| {
                let bt = has_bias.then(|| up(&xs[2], &[out]));
                down(
                    &BE.linear(&up(&xs[0], &xd), &up(&xs[1], &[out, inp]), bt.as_ref())
                        .unwrap(),
                )
            })
        },
    );
}

/// Transposes the last two axes of `[.., R, C]` through `permute0213` on `[batch, R, C, 1]`.
fn transpose_last2(x: &T) -> T {
    let d = x.dims();
    let (r, c) = (d[d.len() - 2], d[d.len() - 1]);
    let batch: usize = d[..d.len() - 2].iter().product();
    let y = BE
        .permute0213(&x.reshape(&[batch, r, c, 1]).unwrap())
        .unwrap();
    let mut out = d.to_vec();
    let len = out.len();
    out[len - 2] = c;
    out[len - 1] = r;
    y.reshape(&out).unwrap()
}

/// Gradients of `C = op(A)·op(B)` written with matmuls (and, for a broadcast `B`, a sum
/// over the batch through `reduce`), as a layer's backward would write them.
fn matmul_grads(a: &T, b: &T, dc: &T, ta: bool, tb: bool, b_broadcast: bool) -> (T, T) {
    // dop(A) = dC·op(B)ᵀ, dop(B) = op(A)ᵀ·dC.
    let da = if !ta {
        BE.matmul(dc, b, false, !tb).unwrap()
    } else if !b_broadcast {
        // dA = (dC·op(B)ᵀ)ᵀ = op(B)·dCᵀ
        BE.matmul(b, dc, tb, true).unwrap()
    } else {
        // A broadcast operand can only be on the right: transpose the product instead.
        transpose_last2(&BE.matmul(dc, b, false, !tb).unwrap())
    };
    let per_batch = if !tb {
        BE.matmul(a, dc, !ta, false).unwrap()
    } else {
        // dB = (op(A)ᵀ·dC)ᵀ = dCᵀ·op(A)
        BE.matmul(dc, a, true, ta).unwrap()
    };
    let db = if b_broadcast {
        let d = per_batch.dims();
        let (r, c) = (d[d.len() - 2], d[d.len() - 1]);
        let nb = per_batch.numel() / (r * c);
        BE.reduce(Reduce::Sum, &per_batch, [1, nb, r * c])
            .unwrap()
            .reshape(&[r, c])
            .unwrap()
    } else {
        per_batch
    };
    (da, db)
}

#[derive(Debug, Clone)]
enum Batch {
    None,
    Shared(Vec<usize>),
    Broadcast(Vec<usize>),
}

fn batch_layout() -> impl Strategy<Value = Batch> {
    prop_oneof![
        Just(Batch::None),
        prop::collection::vec(1usize..4, 1..3).prop_map(Batch::Shared),
        prop::collection::vec(1usize..4, 1..3).prop_map(Batch::Broadcast),
    ]
}

fn fd_matmul(ta: bool, tb: bool) {
    run_fd(
        &format!("matmul (ta={ta}, tb={tb}) dA, dB"),
        (sz(), sz(), sz(), batch_layout(), any::<u64>()),
        |(m, n, k, batch, seed)| {
            let mut g = Gen::new(seed);
            let (bd, b_batched, broadcast) = match &batch {
                Batch::None => (vec![], false, false),
                Batch::Shared(v) => (v.clone(), true, false),
                Batch::Broadcast(v) => (v.clone(), false, true),
            };
            let nb: usize = bd.iter().product();
            let mut ad = bd.clone();
            ad.extend(if ta { [k, m] } else { [m, k] });
            let mut bdims = if b_batched { bd.clone() } else { vec![] };
            bdims.extend(if tb { [n, k] } else { [k, n] });
            let mut cd = bd.clone();
            cd.extend([m, n]);
            let a = g.vec(nb * m * k, -1.0, 1.0);
            let b = g.vec(if b_batched { nb } else { 1 } * k * n, -1.0, 1.0);
            let w = g.vec(nb * m * n, -1.0, 1.0);
            let (da, db) = matmul_grads(
                &up(&a, &ad),
                &up(&b, &bdims),
                &up(&w, &cd),
                ta,
                tb,
                broadcast,
            );
            assert_eq!(da.dims(), &ad[..], "dA shape");
            assert_eq!(db.dims(), &bdims[..], "dB shape");
            fd_error(&[a, b], &[down(&da), down(&db)], &w, 1e-2, &mut g, |xs| {
                down(
                    &BE.matmul(&up(&xs[0], &ad), &up(&xs[1], &bdims), ta, tb)
                        .unwrap(),
                )
            })
        },
    );
}

#[test]
fn fd_matmul_nn() {
    fd_matmul(false, false);
}

#[test]
fn fd_matmul_nt() {
    fd_matmul(false, true);
}

#[test]
fn fd_matmul_tn() {
    fd_matmul(true, false);
}

#[test]
fn fd_matmul_tt() {
    fd_matmul(true, true);
}

// -------------------------------------------------------------------------- norms

/// Rows whose standard deviation around a random mean (`centred`, LayerNorm) or root mean
/// square (RMSNorm) lies in `[0.5, 2]`, so the normalisation is smooth on the scale of the
/// FD step.
fn spread_rows(g: &mut Gen, rows: usize, c: usize, centred: bool) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * c);
    for _ in 0..rows {
        // Redraw a row whose spread is too small to rescale (a single centred value has
        // none at all, and LayerNorm maps it to 0 whatever it is).
        let (z, mean, sd) = loop {
            let z: Vec<f64> = (0..c).map(|_| g.f(-1.0, 1.0) as f64).collect();
            let mean = if centred {
                z.iter().sum::<f64>() / c as f64
            } else {
                0.0
            };
            let sd = (z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64).sqrt();
            if sd > 0.05 || (centred && c == 1) {
                break (z, mean, sd);
            }
        };
        let s = if sd > 0.0 {
            g.f(0.5, 2.0) as f64 / sd
        } else {
            1.0
        };
        let m0 = if centred { g.f(-2.0, 2.0) as f64 } else { 0.0 };
        for v in z {
            x.push((m0 + (v - mean) * s) as f32);
        }
    }
    x
}

fn fd_layernorm(has_g: bool, has_b: bool) {
    let name = format!(
        "layernorm{}{}",
        if has_g { " +γ" } else { "" },
        if has_b { " +β" } else { "" }
    );
    run_fd(&name, (sz(), sz(), any::<u64>()), |(rows, c, seed)| {
        let mut g = Gen::new(seed);
        let eps = 1e-5;
        let x = spread_rows(&mut g, rows, c, true);
        let gamma = g.vec(c, -2.0, 2.0);
        let beta = g.vec(c, -2.0, 2.0);
        let w = g.vec(rows * c, -1.0, 1.0);
        let gt = up(&gamma, &[c]);
        let xt = up(&x, &[rows, c]);
        let (_, stats) = BE.layernorm(&xt, has_g.then_some(&gt), None, eps).unwrap();
        let gr = BE
            .layernorm_backward(
                &xt,
                &stats,
                has_g.then_some(&gt),
                has_b,
                &up(&w, &[rows, c]),
            )
            .unwrap();
        assert_eq!(gr.dweight.is_some(), has_g);
        assert_eq!(gr.dbias.is_some(), has_b);
        let mut inputs = vec![x];
        let mut grads = vec![down(&gr.dx)];
        if has_g {
            inputs.push(gamma);
            grads.push(down(gr.dweight.as_ref().unwrap()));
        }
        if has_b {
            inputs.push(beta);
            grads.push(down(gr.dbias.as_ref().unwrap()));
        }
        fd_error(&inputs, &grads, &w, 1e-2, &mut g, |xs| {
            let gt = has_g.then(|| up(&xs[1], &[c]));
            let bt = has_b.then(|| up(&xs[if has_g { 2 } else { 1 }], &[c]));
            down(
                &BE.layernorm(&up(&xs[0], &[rows, c]), gt.as_ref(), bt.as_ref(), eps)
                    .unwrap()
                    .0,
            )
        })
    });
}

#[test]
fn fd_layernorm_plain() {
    fd_layernorm(false, false);
}

#[test]
fn fd_layernorm_gamma() {
    fd_layernorm(true, false);
}

#[test]
fn fd_layernorm_beta() {
    fd_layernorm(false, true);
}

#[test]
fn fd_layernorm_gamma_beta() {
    fd_layernorm(true, true);
}

fn fd_rmsnorm(has_w: bool) {
    let name = if has_w { "rmsnorm +w" } else { "rmsnorm" };
    run_fd(name, (sz(), sz(), any::<u64>()), |(rows, c, seed)| {
        let mut g = Gen::new(seed);
        let eps = 1e-6;
        let x = spread_rows(&mut g, rows, c, false);
        let wt = g.vec(c, -2.0, 2.0);
        let w = g.vec(rows * c, -1.0, 1.0);
        let wtt = up(&wt, &[c]);
        let xt = up(&x, &[rows, c]);
        let (_, stats) = BE.rmsnorm(&xt, has_w.then_some(&wtt), eps).unwrap();
        let gr = BE
            .rmsnorm_backward(&xt, &stats, has_w.then_some(&wtt), &up(&w, &[rows, c]))
            .unwrap();
        assert_eq!(gr.dweight.is_some(), has_w);
        assert!(gr.dbias.is_none());
        let mut inputs = vec![x];
        let mut grads = vec![down(&gr.dx)];
        if has_w {
            inputs.push(wt);
            grads.push(down(gr.dweight.as_ref().unwrap()));
        }
        fd_error(&inputs, &grads, &w, 1e-2, &mut g, |xs| {
            let wt = has_w.then(|| up(&xs[1], &[c]));
            down(
                &BE.rmsnorm(&up(&xs[0], &[rows, c]), wt.as_ref(), eps)
                    .unwrap()
                    .0,
            )
        })
    });
}

#[test]
fn fd_rmsnorm_plain() {
    fd_rmsnorm(false);
}

#[test]
fn fd_rmsnorm_weight() {
    fd_rmsnorm(true);
}

// ------------------------------------------------------------ softmax and attention

#[test]
fn fd_softmax() {
    run_fd("softmax", (sz(), sz(), any::<u64>()), |(rows, c, seed)| {
        let mut g = Gen::new(seed);
        let x = g.vec(rows * c, -3.0, 3.0);
        let w = g.vec(rows * c, -1.0, 1.0);
        let y = BE.softmax(&up(&x, &[rows, c])).unwrap();
        let dx = BE.softmax_backward(&y, &up(&w, &[rows, c])).unwrap();
        fd_error(&[x], &[down(&dx)], &w, 1e-2, &mut g, |xs| {
            down(&BE.softmax(&up(&xs[0], &[rows, c])).unwrap())
        })
    });
}

#[test]
fn fd_attention() {
    run_fd(
        "attention (dq, dk, dv)",
        (
            prop::sample::select(vec![1usize, 2]),
            prop::sample::select(vec![1usize, 2, 3]),
            sz(),
            sz(),
            0.2f32..1.0,
            any::<u64>(),
        ),
        |(b, h, n, hd, scale, seed)| {
            let mut g = Gen::new(seed);
            let dims = [b, h, n, hd];
            let len = b * h * n * hd;
            let (q, k, v) = (
                g.vec(len, -1.5, 1.5),
                g.vec(len, -1.5, 1.5),
                g.vec(len, -1.5, 1.5),
            );
            let w = g.vec(len, -1.0, 1.0);
            let (qt, kt, vt) = (up(&q, &dims), up(&k, &dims), up(&v, &dims));
            let (_, p) = BE.attention(&qt, &kt, &vt, scale).unwrap();
            let gr = BE
                .attention_backward(&qt, &kt, &vt, &p, &up(&w, &dims), scale)
                .unwrap();
            let grads = vec![down(&gr.dq), down(&gr.dk), down(&gr.dv)];
            fd_error(&[q, k, v], &grads, &w, 1e-2, &mut g, |xs| {
                let (o, _) = BE
                    .attention(
                        &up(&xs[0], &dims),
                        &up(&xs[1], &dims),
                        &up(&xs[2], &dims),
                        scale,
                    )
                    .unwrap();
                down(&o)
            })
        },
    );
}

// --------------------------------------------------------------- transformer ops

/// The backward of RoPE is RoPE with `inverse`; with arbitrary tables (not rotations) this
/// checks that `inverse` is the exact transpose of the forward map.
#[test]
fn fd_rope() {
    run_fd(
        "rope (inverse = backward)",
        (sz(), sz(), 1usize..5, any::<bool>(), any::<u64>()),
        |(b, n, half, rotation, seed)| {
            let mut g = Gen::new(seed);
            let hd = 2 * half;
            let (cos, sin) = if rotation {
                // Pair-repeated angles, as the §3.4 tables have.
                let (mut c, mut s) = (Vec::new(), Vec::new());
                for _ in 0..n * half {
                    let a = g.f(-6.0, 6.0) as f64;
                    c.extend([a.cos() as f32; 2]);
                    s.extend([a.sin() as f32; 2]);
                }
                (c, s)
            } else {
                (g.vec(n * hd, -1.5, 1.5), g.vec(n * hd, -1.5, 1.5))
            };
            let (ct, st) = (up(&cos, &[n, hd]), up(&sin, &[n, hd]));
            let dims = [b, n, hd];
            let x = g.vec(b * n * hd, -1.0, 1.0);
            let w = g.vec(b * n * hd, -1.0, 1.0);
            let dx = BE.rope(&up(&w, &dims), &ct, &st, true).unwrap();
            fd_error(&[x], &[down(&dx)], &w, 1e-2, &mut g, |xs| {
                down(&BE.rope(&up(&xs[0], &dims), &ct, &st, false).unwrap())
            })
        },
    );
}

#[test]
fn fd_swiglu() {
    run_fd("swiglu", (sz(), sz(), any::<u64>()), |(rows, h, seed)| {
        let mut g = Gen::new(seed);
        let u = g.vec(rows * 2 * h, -4.0, 4.0);
        let w = g.vec(rows * h, -1.0, 1.0);
        let du = BE
            .swiglu_backward(&up(&u, &[rows, 2 * h]), &up(&w, &[rows, h]))
            .unwrap();
        assert_eq!(du.dims(), &[rows, 2 * h]);
        fd_error(&[u], &[down(&du)], &w, 1e-2, &mut g, |xs| {
            down(&BE.swiglu(&up(&xs[0], &[rows, 2 * h])).unwrap())
        })
    });
}

/// How many conditioning tokens a modulate/gate case uses.
#[derive(Debug, Clone, Copy)]
enum Cond {
    /// `Nc = 1` (per sample, the backbone).
    PerSample,
    /// `Nc = N` (per token, the head).
    PerToken,
    /// `1 < Nc < N` with `N/Nc` consecutive tokens per conditioning token.
    Grouped,
}

fn cond_sizes(mode: Cond, a: usize, b: usize) -> (usize, usize) {
    match mode {
        Cond::PerSample => (a * b, 1),
        Cond::PerToken => (a, a),
        Cond::Grouped => (2 * (b + 1), 2),
    }
}

fn fd_modulate(mode: Cond) {
    run_fd(
        &format!("modulate {mode:?} (dx, dshift, dscale)"),
        (
            sz(),
            sz(),
            sz(),
            sz(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        ),
        |(b, a, r, c, has_shift, has_scale, seed)| {
            let mut g = Gen::new(seed);
            let (n, nc) = cond_sizes(mode, a, r);
            let (xd, cd) = ([b, n, c], [b, nc, c]);
            let x = g.vec(b * n * c, -2.0, 2.0);
            let shift = g.vec(b * nc * c, -1.0, 1.0);
            let scale = g.vec(b * nc * c, -1.0, 1.0);
            let w = g.vec(b * n * c, -1.0, 1.0);
            let (sht, sct) = (up(&shift, &cd), up(&scale, &cd));
            let gr = BE
                .modulate_backward(
                    &up(&x, &xd),
                    has_shift.then_some(&sht),
                    has_scale.then_some(&sct),
                    &up(&w, &xd),
                )
                .unwrap();
            assert_eq!(gr.dshift.is_some(), has_shift);
            assert_eq!(gr.dscale.is_some(), has_scale);
            let mut inputs = vec![x];
            let mut grads = vec![down(&gr.dx)];
            if has_shift {
                inputs.push(shift);
                grads.push(down(gr.dshift.as_ref().unwrap()));
            }
            if has_scale {
                inputs.push(scale);
                grads.push(down(gr.dscale.as_ref().unwrap()));
            }
            fd_error(&inputs, &grads, &w, 1e-2, &mut g, |xs| {
                let sh = has_shift.then(|| up(&xs[1], &cd));
                let sc = has_scale.then(|| up(&xs[if has_shift { 2 } else { 1 }], &cd));
                down(
                    &BE.modulate(&up(&xs[0], &xd), sh.as_ref(), sc.as_ref())
                        .unwrap(),
                )
            })
        },
    );
}

#[test]
fn fd_modulate_per_sample() {
    fd_modulate(Cond::PerSample);
}

#[test]
fn fd_modulate_per_token() {
    fd_modulate(Cond::PerToken);
}

#[test]
fn fd_modulate_grouped() {
    fd_modulate(Cond::Grouped);
}

#[test]
fn fd_gate() {
    let mode = prop::sample::select(vec![Cond::PerSample, Cond::PerToken, Cond::Grouped]);
    run_fd(
        "gate (dx, dg; Nc = 1, N, between)",
        (mode, sz(), sz(), sz(), sz(), any::<u64>()),
        |(mode, b, a, r, c, seed)| {
            let mut g = Gen::new(seed);
            let (n, nc) = cond_sizes(mode, a, r);
            let (xd, cd) = ([b, n, c], [b, nc, c]);
            let x = g.vec(b * n * c, -2.0, 2.0);
            let gt = g.vec(b * nc * c, -2.0, 2.0);
            let w = g.vec(b * n * c, -1.0, 1.0);
            let (dx, dg) = BE
                .gate_backward(&up(&x, &xd), &up(&gt, &cd), &up(&w, &xd))
                .unwrap();
            assert_eq!(dg.dims(), &cd);
            fd_error(&[x, gt], &[down(&dx), down(&dg)], &w, 1e-2, &mut g, |xs| {
                down(&BE.gate(&up(&xs[0], &xd), &up(&xs[1], &cd)).unwrap())
            })
        },
    );
}

#[test]
fn fd_gather_scatter_rows() {
    run_fd(
        "gather_rows / scatter_add_rows",
        (sz(), sz(), 0usize..12, any::<u64>()),
        |(v, c, len, seed)| {
            let mut g = Gen::new(seed);
            let table = g.vec(v * c, -2.0, 2.0);
            let idx: Vec<u32> = (0..len).map(|_| g.below(v) as u32).collect();
            let w = g.vec(len * c, -1.0, 1.0);
            let dt = BE.scatter_add_rows(&up(&w, &[len, c]), &idx, v).unwrap();
            fd_error(&[table], &[down(&dt)], &w, 1e-2, &mut g, |xs| {
                down(&BE.gather_rows(&up(&xs[0], &[v, c]), &idx).unwrap())
            })
        },
    );
}

/// `bcast_affine`'s gradients written with the backend's own ops: `dx` is `bcast_affine`
/// of `dy` with the scale alone; `da`, `db` sum `dy ⊙ x` and `dy` over the outer and inner
/// axes with two `reduce`s.
#[test]
fn fd_bcast_affine() {
    run_fd(
        "bcast_affine (dx, da, db via reduce)",
        (sz(), sz(), sz(), any::<bool>(), any::<bool>(), any::<u64>()),
        |(outer, mid, inner, has_a, has_b, seed)| {
            let mut g = Gen::new(seed);
            let dims = [outer, mid, inner];
            let len = outer * mid * inner;
            let x = g.vec(len, -2.0, 2.0);
            let a = g.vec(mid, -2.0, 2.0);
            let b = g.vec(mid, -2.0, 2.0);
            let w = g.vec(len, -1.0, 1.0);
            let (xt, at, wt) = (up(&x, &[len]), up(&a, &[mid]), up(&w, &[len]));
            let sum_outer_inner = |t: &T| -> Vec<f32> {
                let r = BE.reduce(Reduce::Sum, t, [outer * mid, inner, 1]).unwrap();
                down(&BE.reduce(Reduce::Sum, &r, [1, outer, mid]).unwrap())
            };
            let dx = BE
                .bcast_affine(&wt, has_a.then_some(&at), None, dims)
                .unwrap();
            let mut inputs = vec![x];
            let mut grads = vec![down(&dx)];
            if has_a {
                inputs.push(a);
                let wx = BE.binary(rae_core::Binary::Mul, &wt, &xt).unwrap();
                grads.push(sum_outer_inner(&wx));
            }
            if has_b {
                inputs.push(b);
                grads.push(sum_outer_inner(&wt));
            }
            fd_error(&inputs, &grads, &w, 1e-2, &mut g, |xs| {
                let at = has_a.then(|| up(&xs[1], &[mid]));
                let bt = has_b.then(|| up(&xs[if has_a { 2 } else { 1 }], &[mid]));
                down(
                    &BE.bcast_affine(&up(&xs[0], &[len]), at.as_ref(), bt.as_ref(), dims)
                        .unwrap(),
                )
            })
        },
    );
}

// ------------------------------------------------------------------ adjoint pairs

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `|⟨P x, y⟩ − ⟨x, P* y⟩| / (‖x‖·‖y‖)`: zero for an exact adjoint pair.
fn adjoint_mismatch(x: &[f32], px: &[f32], y: &[f32], pty: &[f32]) -> f64 {
    let norm = (dot(x, x) * dot(y, y)).sqrt().max(1e-30);
    (dot(px, y) - dot(x, pty)).abs() / norm
}

const ADJ_TOL: f64 = 1e-6;

#[test]
fn adjoint_patchify_unpatchify() {
    let order = prop::sample::select(vec![PatchOrder::ChannelFirst, PatchOrder::ChannelLast]);
    run_metric(
        "adjoint",
        "patchify / unpatchify",
        ADJ_TOL,
        (
            order,
            1usize..3,
            sz(),
            1usize..4,
            1usize..4,
            1usize..4,
            any::<u64>(),
        ),
        |(order, b, c, p, gh, gw, seed)| {
            let mut g = Gen::new(seed);
            let (h, w) = (gh * p, gw * p);
            let x = g.vec(b * c * h * w, -1.0, 1.0);
            let y = g.vec(b * gh * gw * p * p * c, -1.0, 1.0);
            let px = BE.patchify(&up(&x, &[b, c, h, w]), p, order).unwrap();
            let pty = BE
                .unpatchify(&up(&y, &[b, gh * gw, p * p * c]), c, (gh, gw), p, order)
                .unwrap();
            adjoint_mismatch(&x, &down(&px), &y, &down(&pty))
        },
    );
}

#[test]
fn adjoint_permute0213() {
    run_metric(
        "adjoint",
        "permute0213",
        ADJ_TOL,
        (sz(), sz(), sz(), sz(), any::<u64>()),
        |(a, b, c, d, seed)| {
            let mut g = Gen::new(seed);
            let x = g.vec(a * b * c * d, -1.0, 1.0);
            let y = g.vec(a * b * c * d, -1.0, 1.0);
            let px = BE.permute0213(&up(&x, &[a, b, c, d])).unwrap();
            // The adjoint of [A, B, C, D] → [A, C, B, D] is the same op on [A, C, B, D].
            let pty = BE.permute0213(&up(&y, &[a, c, b, d])).unwrap();
            assert_eq!(pty.dims(), &[a, b, c, d]);
            adjoint_mismatch(&x, &down(&px), &y, &down(&pty))
        },
    );
}

#[test]
fn adjoint_slice_concat_mid() {
    run_metric(
        "adjoint",
        "slice_mid / concat_mid",
        ADJ_TOL,
        (sz(), sz(), sz(), sz(), sz(), any::<u64>()),
        |(outer, m0, m1, m2, inner, seed)| {
            let mut g = Gen::new(seed);
            let mid = m0 + m1 + m2;
            let dims = [outer, mid, inner];
            let x = g.vec(outer * mid * inner, -1.0, 1.0);
            let xt = up(&x, &[outer * mid * inner]);
            // slice [m0, m0 + m1) and its adjoint: zero-padding by concatenation.
            let y = g.vec(outer * m1 * inner, -1.0, 1.0);
            let sx = BE.slice_mid(&xt, dims, m0, m1).unwrap();
            let (z0, z2) = (
                BE.zeros(&[outer, m0, inner]).unwrap(),
                BE.zeros(&[outer, m2, inner]).unwrap(),
            );
            let yt = up(&y, &[outer, m1, inner]);
            let pad = BE.concat_mid(&[&z0, &yt, &z2], outer, inner).unwrap();
            let e1 = adjoint_mismatch(&x, &down(&sx), &y, &down(&pad));
            // concat of three parts and its adjoint: the three slices.
            let parts: Vec<Vec<f32>> = [m0, m1, m2]
                .iter()
                .map(|&m| g.vec(outer * m * inner, -1.0, 1.0))
                .collect();
            let pts: Vec<T> = parts
                .iter()
                .zip([m0, m1, m2])
                .map(|(p, m)| up(p, &[outer, m, inner]))
                .collect();
            let cat = BE
                .concat_mid(&[&pts[0], &pts[1], &pts[2]], outer, inner)
                .unwrap();
            let flat: Vec<f32> = parts.concat();
            let mut back = Vec::new();
            for (start, len) in [(0, m0), (m0, m1), (m0 + m1, m2)] {
                back.extend(down(&BE.slice_mid(&xt, dims, start, len).unwrap()));
            }
            let e2 = adjoint_mismatch(&flat, &down(&cat), &x, &back);
            e1.max(e2)
        },
    );
}
