//! Forward ops of [`CpuBackend`] against direct, obviously-correct definitions written here
//! (naive loops in f64), over random shapes that include size 1 and odd sizes, plus the
//! shape-error contract of `backend.rs`: a mismatch is an `Err` whose message names both
//! shapes, never a panic.
//!
//! Test data comes from a proptest-chosen seed through SplitMix64, so a failing case
//! shrinks on its sizes and prints a seed that reproduces it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;
use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use rae_core::backend::{AdamWStep, Backend, Binary, NormStats, PatchOrder, Reduce, Unary};
use rae_core::{CpuBackend, Result};

mod common;
use common::{down, up, Gen, T};
const BE: CpuBackend = CpuBackend::new();

// ------------------------------------------------------------------------------ helpers

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise (NaN fails).
#[track_caller]
fn close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w} (error {err:e})"
        );
    }
}

/// Asserts `|got − want| ≤ tol·scale_i + 1e-30` element-wise, `scale` being the sum of the
/// magnitudes of the terms that make up each element (the natural bound for a sum).
#[track_caller]
fn close_scaled(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * s + 1e-30,
            "{what}: element {i}: got {g}, want {w} (error {err:e}, scale {s:e})"
        );
    }
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Sizes including 1 and odd sizes.
fn size() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 4, 5, 7, 17, 33])
}

/// Small sizes for the axes that multiply (batch, heads, rows).
fn small() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 5])
}

/// Proptest cases per property: 64, or `PROPTEST_CASES` when set (for longer soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The §0 definitions of the unary ops, in f64.
fn unary_ref(op: Unary, x: f64) -> f64 {
    match op {
        Unary::Silu => x * sigmoid(x),
        Unary::GeluErf => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        Unary::GeluTanh => {
            0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Unary::Sigmoid => sigmoid(x),
        Unary::Square => x * x,
        Unary::Abs => x.abs(),
        Unary::Relu => x.max(0.0),
        Unary::LeakyRelu => {
            if x > 0.0 {
                x
            } else {
                0.2 * x
            }
        }
    }
}

fn unary_op() -> impl Strategy<Value = Unary> {
    prop::sample::select(vec![
        Unary::Silu,
        Unary::GeluErf,
        Unary::GeluTanh,
        Unary::Sigmoid,
        Unary::Square,
        Unary::Abs,
        Unary::Relu,
        Unary::LeakyRelu,
    ])
}

/// Element `(i, j)` of `op(x)` for one `[rows, cols]` logical matrix starting at `base`,
/// stored row-major, or as its transpose `[cols, rows]` when `t`.
fn at(x: &[f32], base: usize, rows: usize, cols: usize, t: bool, i: usize, j: usize) -> f64 {
    let idx = if t {
        base + j * rows + i
    } else {
        base + i * cols + j
    };
    x[idx] as f64
}

/// How the batch axes of a matmul are laid out.
#[derive(Debug, Clone)]
enum Batch {
    /// Plain rank-2 product.
    None,
    /// Both operands carry these batch axes.
    Shared(Vec<usize>),
    /// The left operand carries them, the right is rank 2 and broadcast.
    Broadcast(Vec<usize>),
}

fn batch_layout() -> impl Strategy<Value = Batch> {
    prop_oneof![
        Just(Batch::None),
        prop::collection::vec(1usize..4, 1..3).prop_map(Batch::Shared),
        prop::collection::vec(1usize..4, 1..3).prop_map(Batch::Broadcast),
    ]
}

/// Runs one matmul on random data and compares it with the triple loop.
fn check_matmul(m: usize, n: usize, k: usize, ta: bool, tb: bool, batch: &Batch, seed: u64) {
    let mut g = Gen::new(seed);
    let (bdims, b_batched) = match batch {
        Batch::None => (vec![], false),
        Batch::Shared(v) => (v.clone(), true),
        Batch::Broadcast(v) => (v.clone(), false),
    };
    let nb: usize = bdims.iter().product();
    let mut ad = bdims.clone();
    ad.extend(if ta { [k, m] } else { [m, k] });
    let mut bd = if b_batched { bdims.clone() } else { vec![] };
    bd.extend(if tb { [n, k] } else { [k, n] });
    let a = g.vec(nb * m * k, -1.0, 1.0);
    let b = g.vec(if b_batched { nb } else { 1 } * k * n, -1.0, 1.0);
    let c = BE.matmul(&up(&a, &ad), &up(&b, &bd), ta, tb).unwrap();
    let mut want_dims = bdims.clone();
    want_dims.extend([m, n]);
    assert_eq!(c.dims(), &want_dims[..], "matmul output shape");
    let mut want = vec![0.0f64; nb * m * n];
    let mut scale = vec![0.0f64; nb * m * n];
    for bi in 0..nb {
        let abase = bi * m * k;
        let bbase = if b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut sa) = (0.0, 0.0);
                for p in 0..k {
                    let t = at(&a, abase, m, k, ta, i, p) * at(&b, bbase, k, n, tb, p, j);
                    s += t;
                    sa += t.abs();
                }
                want[(bi * m + i) * n + j] = s;
                scale[(bi * m + i) * n + j] = sa;
            }
        }
    }
    let what = format!("matmul m={m} n={n} k={k} ta={ta} tb={tb} {batch:?}");
    close_scaled(&what, &down(&c), &want, &scale, 1e-5);
}

/// RoPE tables of §3.4 for head dim `hd` (a multiple of 4) on a `G × G` grid: `[G², hd]`.
fn rope_tables(hd: usize, grid: usize) -> (Vec<f32>, Vec<f32>) {
    let m = hd / 2;
    let theta = |k: usize| 10000f64.powf(-2.0 * k as f64 / m as f64);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for i in 0..grid {
        for j in 0..grid {
            for c in 0..hd {
                let a = if c < m {
                    i as f64 * theta(c / 2)
                } else {
                    j as f64 * theta((c - m) / 2)
                };
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }
    (cos, sin)
}

/// The §3.4 adjacent-pair rotation of one head vector with per-channel tables.
fn rope_ref(x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for p in 0..x.len() / 2 {
        let (a, b) = (x[2 * p] as f64, x[2 * p + 1] as f64);
        y[2 * p] = a * cos[2 * p] as f64 - b * sin[2 * p] as f64;
        y[2 * p + 1] = b * cos[2 * p + 1] as f64 + a * sin[2 * p + 1] as f64;
    }
    y
}

/// Position of `(channel, row, column)` inside a flattened patch, as `PatchOrder` documents.
fn patch_pos(order: PatchOrder, c: usize, p: usize, ci: usize, r: usize, s: usize) -> usize {
    match order {
        PatchOrder::ChannelFirst => (ci * p + r) * p + s,
        PatchOrder::ChannelLast => (r * p + s) * c + ci,
    }
}

fn patch_order() -> impl Strategy<Value = PatchOrder> {
    prop::sample::select(vec![PatchOrder::ChannelFirst, PatchOrder::ChannelLast])
}

// ----------------------------------------------------------------- property tests

proptest! {
    #![proptest_config(config())]

    /// Each unary op equals its §0 definition, including the tails (|x| up to 9).
    #[test]
    fn unary_matches_definition(op in unary_op(), d0 in size(), d1 in small(), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let x = g.vec(d0 * d1, -9.0, 9.0);
        let y = BE.unary(op, &up(&x, &[d1, d0])).unwrap();
        prop_assert_eq!(y.dims(), &[d1, d0]);
        let want: Vec<f64> = x.iter().map(|&v| unary_ref(op, v as f64)).collect();
        close(&format!("{op:?}"), &down(&y), &want, 2e-6, 2e-6);
    }

    /// `binary`, `scale` and `axpy` element-wise.
    #[test]
    fn elementwise_arithmetic(n in size(), r in small(), alpha in -3.0f32..3.0, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let dims = [r, n];
        let (a, b) = (g.vec(r * n, -4.0, 4.0), g.vec(r * n, -4.0, 4.0));
        let (ta, tb) = (up(&a, &dims), up(&b, &dims));
        let pairs = || a.iter().zip(&b).map(|(&x, &y)| (x as f64, y as f64));
        let add: Vec<f64> = pairs().map(|(x, y)| x + y).collect();
        let sub: Vec<f64> = pairs().map(|(x, y)| x - y).collect();
        let mul: Vec<f64> = pairs().map(|(x, y)| x * y).collect();
        let mag: Vec<f64> = pairs().map(|(x, y)| x.abs() + y.abs()).collect();
        close_scaled("add", &down(&BE.binary(Binary::Add, &ta, &tb).unwrap()), &add, &mag, 1e-7);
        close_scaled("sub", &down(&BE.binary(Binary::Sub, &ta, &tb).unwrap()), &sub, &mag, 1e-7);
        close("mul", &down(&BE.binary(Binary::Mul, &ta, &tb).unwrap()), &mul, 0.0, 1e-7);
        let sc: Vec<f64> = a.iter().map(|&x| alpha as f64 * x as f64).collect();
        close("scale", &down(&BE.scale(&ta, alpha).unwrap()), &sc, 0.0, 1e-7);
        let ax: Vec<f64> = pairs().map(|(x, y)| alpha as f64 * x + y).collect();
        let axm: Vec<f64> = pairs().map(|(x, y)| (alpha as f64 * x).abs() + y.abs()).collect();
        let got = BE.axpy(alpha, &ta, &tb).unwrap();
        prop_assert_eq!(got.dims(), &dims);
        close_scaled("axpy", &down(&got), &ax, &axm, 2e-7);
    }

    /// `bcast_affine`: `y[o, m, i] = x[o, m, i]·a[m] + b[m]`, each coefficient optional.
    #[test]
    fn bcast_affine_matches_definition(
        outer in size(), mid in size(), inner in small(),
        has_a in any::<bool>(), has_b in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let x = g.vec(outer * mid * inner, -2.0, 2.0);
        let (a, b) = (g.vec(mid, -2.0, 2.0), g.vec(mid, -2.0, 2.0));
        let (at_, bt) = (up(&a, &[mid]), up(&b, &[mid]));
        let xt = up(&x, &[outer, mid * inner]);
        let y = BE
            .bcast_affine(&xt, has_a.then_some(&at_), has_b.then_some(&bt), [outer, mid, inner])
            .unwrap();
        prop_assert_eq!(y.dims(), xt.dims());
        let mut want = vec![0.0; x.len()];
        for o in 0..outer {
            for m in 0..mid {
                for i in 0..inner {
                    let idx = (o * mid + m) * inner + i;
                    let s = if has_a { a[m] as f64 } else { 1.0 };
                    let t = if has_b { b[m] as f64 } else { 0.0 };
                    want[idx] = x[idx] as f64 * s + t;
                }
            }
        }
        close("bcast_affine", &down(&y), &want, 1e-6, 1e-6);
    }

    /// `reduce` sums, sums of squares and means over the middle axis.
    #[test]
    fn reduce_matches_definition(outer in small(), mid in size(), inner in size(), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let x = g.vec(outer * mid * inner, -2.0, 2.0);
        let xt = up(&x, &[outer * mid * inner]);
        for op in [Reduce::Sum, Reduce::SumSq, Reduce::Mean] {
            let y = BE.reduce(op, &xt, [outer, mid, inner]).unwrap();
            prop_assert_eq!(y.dims(), &[outer, inner]);
            let mut want = vec![0.0; outer * inner];
            let mut scale = vec![0.0; outer * inner];
            for o in 0..outer {
                for m in 0..mid {
                    for i in 0..inner {
                        let v = x[(o * mid + m) * inner + i] as f64;
                        let t = if op == Reduce::SumSq { v * v } else { v };
                        want[o * inner + i] += t;
                        scale[o * inner + i] += t.abs();
                    }
                }
            }
            if op == Reduce::Mean {
                want.iter_mut().for_each(|w| *w /= mid as f64);
                scale.iter_mut().for_each(|w| *w /= mid as f64);
            }
            close_scaled(&format!("{op:?}"), &down(&y), &want, &scale, 1e-5);
        }
    }

    /// `matmul` for every transpose combination and batch layout against the triple loop.
    #[test]
    fn matmul_matches_triple_loop(
        m in size(), n in size(), k in size(), ta in any::<bool>(), tb in any::<bool>(),
        batch in batch_layout(), seed in any::<u64>(),
    ) {
        check_matmul(m, n, k, ta, tb, &batch, seed);
    }

    /// `linear`: `y = x·Wᵀ + b` (§0) on rank-2 and rank-3 inputs.
    #[test]
    fn linear_matches_definition(
        r0 in small(), r1 in small(), rank3 in any::<bool>(), inp in size(), out in size(),
        has_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let rows = r0 * r1;
        let x = g.vec(rows * inp, -1.0, 1.0);
        let w = g.vec(out * inp, -1.0, 1.0);
        let b = g.vec(out, -1.0, 1.0);
        let xdims: Vec<usize> = if rank3 { vec![r0, r1, inp] } else { vec![rows, inp] };
        let bt = up(&b, &[out]);
        let y = BE
            .linear(&up(&x, &xdims), &up(&w, &[out, inp]), has_bias.then_some(&bt))
            .unwrap();
        let mut ydims = xdims.clone();
        *ydims.last_mut().unwrap() = out;
        prop_assert_eq!(y.dims(), &ydims[..]);
        let mut want = vec![0.0; rows * out];
        let mut scale = vec![0.0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut s = if has_bias { b[o] as f64 } else { 0.0 };
                let mut sa = s.abs();
                for i in 0..inp {
                    let t = x[r * inp + i] as f64 * w[o * inp + i] as f64;
                    s += t;
                    sa += t.abs();
                }
                want[r * out + o] = s;
                scale[r * out + o] = sa;
            }
        }
        close_scaled("linear", &down(&y), &want, &scale, 1e-5);
    }

    /// LayerNorm (§0: biased variance) with and without the affine, and its saved statistics.
    #[test]
    fn layernorm_matches_definition(
        rows in small(), c in size(), has_g in any::<bool>(), has_b in any::<bool>(),
        offset in -4.0f64..4.0, spread in 0.1f64..3.0, seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let eps = 1e-5f32;
        let x = g.vec(rows * c, offset - spread, offset + spread);
        let (gamma, beta) = (g.vec(c, -2.0, 2.0), g.vec(c, -2.0, 2.0));
        let (gt, bt) = (up(&gamma, &[c]), up(&beta, &[c]));
        let (y, stats) = BE
            .layernorm(&up(&x, &[rows, c]), has_g.then_some(&gt), has_b.then_some(&bt), eps)
            .unwrap();
        let (mut want, mut means, mut rstds) = (vec![0.0; rows * c], vec![], vec![]);
        // x − mean is formed in f32, off by a few ulp of |x|; a row of nearly equal values
        // (var ≲ eps) amplifies that by rstd, so the tolerances carry that conditioning.
        let (mut y_tol, mut rstd_rtol) = (vec![0.0; rows * c], vec![]);
        for r in 0..rows {
            let row = f64s(&x[r * c..(r + 1) * c]);
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let ulps = 8.0 * f32::EPSILON as f64 * row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            means.push(mean);
            rstds.push(rstd);
            rstd_rtol.push(1e-5 + ulps * rstd);
            for j in 0..c {
                let gj = if has_g { gamma[j] as f64 } else { 1.0 };
                let bj = if has_b { beta[j] as f64 } else { 0.0 };
                let v = (row[j] - mean) * rstd * gj + bj;
                want[r * c + j] = v;
                y_tol[r * c + j] = 1e-6 + 1e-5 * v.abs() + ulps * rstd * gj.abs();
            }
        }
        close_scaled("layernorm y", &down(&y), &want, &y_tol, 1.0);
        prop_assert_eq!(stats.mean.dims(), &[rows]);
        close("layernorm mean", &down(&stats.mean), &means, 1e-5, 1e-6);
        let rstd_tol: Vec<f64> = rstds.iter().zip(&rstd_rtol).map(|(r, t)| r * t).collect();
        close_scaled("layernorm rstd", &down(&stats.rstd), &rstds, &rstd_tol, 1.0);
    }

    /// RMSNorm (§3.3) with and without the weight.
    #[test]
    fn rmsnorm_matches_definition(
        rows in small(), c in size(), has_w in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let eps = 1e-6f32;
        let x = g.vec(rows * c, -3.0, 3.0);
        let w = g.vec(c, -2.0, 2.0);
        let wt = up(&w, &[c]);
        let (y, stats) = BE.rmsnorm(&up(&x, &[rows, c]), has_w.then_some(&wt), eps).unwrap();
        let (mut want, mut rstds) = (vec![0.0; rows * c], vec![]);
        for r in 0..rows {
            let row = f64s(&x[r * c..(r + 1) * c]);
            let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
            let rstd = 1.0 / (ms + eps as f64).sqrt();
            rstds.push(rstd);
            for j in 0..c {
                want[r * c + j] = row[j] * rstd * if has_w { w[j] as f64 } else { 1.0 };
            }
        }
        close("rmsnorm y", &down(&y), &want, 1e-5, 1e-5);
        close("rmsnorm rstd", &down(&stats.rstd), &rstds, 0.0, 1e-5);
        prop_assert!(down(&stats.mean).iter().all(|&m| m == 0.0), "rmsnorm mean must be zeros");
    }

    /// Softmax over the last axis, stable for large logits, rows summing to one.
    #[test]
    fn softmax_matches_definition(
        rows in small(), c in size(), offset in -100.0f64..100.0, seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let x = g.vec(rows * c, offset - 20.0, offset + 20.0);
        let y = down(&BE.softmax(&up(&x, &[rows, c])).unwrap());
        let mut want = vec![0.0; rows * c];
        for r in 0..rows {
            let row = f64s(&x[r * c..(r + 1) * c]);
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for j in 0..c {
                want[r * c + j] = (row[j] - max).exp() / z;
            }
            let s: f64 = y[r * c..(r + 1) * c].iter().map(|&v| v as f64).sum();
            prop_assert!((s - 1.0).abs() < 1e-5, "row {} sums to {}", r, s);
        }
        // x − max rounds to within 2⁻²⁴·40 in f32, which exp turns into a relative error.
        close("softmax", &y, &want, 1e-7, 1e-5);
    }

    /// Attention `softmax(q·kᵀ·scale)·v` (§0) and its probabilities.
    #[test]
    fn attention_matches_definition(
        b in small(), h in small(), n in size(), hd in small(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let dims = [b, h, n, hd];
        let len = b * h * n * hd;
        let (q, k, v) = (g.vec(len, -2.0, 2.0), g.vec(len, -2.0, 2.0), g.vec(len, -2.0, 2.0));
        let scale = 1.0 / (hd as f32).sqrt();
        let (o, p) = BE
            .attention(&up(&q, &dims), &up(&k, &dims), &up(&v, &dims), scale)
            .unwrap();
        prop_assert_eq!(o.dims(), &dims);
        prop_assert_eq!(p.dims(), &[b, h, n, n]);
        let (mut want_o, mut want_p) = (vec![0.0; len], vec![0.0; b * h * n * n]);
        for bh in 0..b * h {
            let base = bh * n * hd;
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| q[base + i * hd + d] as f64 * k[base + j * hd + d] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                for j in 0..n {
                    let pj = (s[j] - max).exp() / z;
                    want_p[(bh * n + i) * n + j] = pj;
                    for d in 0..hd {
                        want_o[base + i * hd + d] += pj * v[base + j * hd + d] as f64;
                    }
                }
            }
        }
        close("attention p", &down(&p), &want_p, 1e-6, 1e-5);
        close("attention o", &down(&o), &want_o, 1e-5, 1e-5);
    }

    /// RoPE with arbitrary tables follows the §3.4 per-channel formula
    /// `y = x ⊙ cos + rot(x) ⊙ sin` in the adjacent-pair layout.
    #[test]
    fn rope_matches_formula(
        b in small(), n in size(), half in 1usize..6, seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let hd = 2 * half;
        let x = g.vec(b * n * hd, -2.0, 2.0);
        let (cos, sin) = (g.vec(n * hd, -1.5, 1.5), g.vec(n * hd, -1.5, 1.5));
        let y = BE
            .rope(&up(&x, &[b, n, hd]), &up(&cos, &[n, hd]), &up(&sin, &[n, hd]), false)
            .unwrap();
        let mut want = Vec::new();
        for row in 0..b * n {
            let t = row % n;
            want.extend(rope_ref(&x[row * hd..(row + 1) * hd], &cos[t * hd..(t + 1) * hd], &sin[t * hd..(t + 1) * hd]));
        }
        close("rope", &down(&y), &want, 1e-6, 1e-6);
    }

    /// SwiGLU `SiLU(u1) ⊙ u2` with `u = [u1 | u2]` (§3.3).
    #[test]
    fn swiglu_matches_definition(rows in small(), h in size(), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let u = g.vec(rows * 2 * h, -6.0, 6.0);
        let y = BE.swiglu(&up(&u, &[rows, 2 * h])).unwrap();
        prop_assert_eq!(y.dims(), &[rows, h]);
        let mut want = vec![0.0; rows * h];
        for r in 0..rows {
            for j in 0..h {
                let (a, b) = (u[r * 2 * h + j] as f64, u[r * 2 * h + h + j] as f64);
                want[r * h + j] = a * sigmoid(a) * b;
            }
        }
        close("swiglu", &down(&y), &want, 1e-6, 1e-5);
    }

    /// Modulate and gate (§3.3): conditioning token `k` covers the `N/Nc` consecutive tokens
    /// `k·N/Nc ..`, for `Nc = 1`, `Nc = N` and ratios in between.
    #[test]
    fn modulate_and_gate_broadcast(
        b in small(), nc in 1usize..4, rep in small(), c in size(),
        has_shift in any::<bool>(), has_scale in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let n = nc * rep;
        let x = g.vec(b * n * c, -2.0, 2.0);
        let (sh, sc, gt) = (g.vec(b * nc * c, -1.0, 1.0), g.vec(b * nc * c, -1.0, 1.0), g.vec(b * nc * c, -2.0, 2.0));
        let cd = [b, nc, c];
        let (sht, sct) = (up(&sh, &cd), up(&sc, &cd));
        let xt = up(&x, &[b, n, c]);
        let y = BE.modulate(&xt, has_shift.then_some(&sht), has_scale.then_some(&sct)).unwrap();
        let gy = BE.gate(&xt, &up(&gt, &cd)).unwrap();
        let (mut want, mut want_g) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        for bi in 0..b {
            for t in 0..n {
                let kk = t / (n / nc);
                for j in 0..c {
                    let ci = (bi * nc + kk) * c + j;
                    let xi = x[(bi * n + t) * c + j] as f64;
                    let s = if has_scale { sc[ci] as f64 } else { 0.0 };
                    let o = if has_shift { sh[ci] as f64 } else { 0.0 };
                    want[(bi * n + t) * c + j] = xi * (1.0 + s) + o;
                    want_g[(bi * n + t) * c + j] = xi * gt[ci] as f64;
                }
            }
        }
        close("modulate", &down(&y), &want, 1e-6, 1e-6);
        close("gate", &down(&gy), &want_g, 1e-6, 1e-6);
    }

    /// Embedding lookup and its scatter-add (repeated indices accumulate).
    #[test]
    fn gather_and_scatter_rows(v in size(), c in size(), len in 0usize..12, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let table = g.vec(v * c, -2.0, 2.0);
        let idx: Vec<u32> = (0..len).map(|_| g.below(v) as u32).collect();
        let y = BE.gather_rows(&up(&table, &[v, c]), &idx).unwrap();
        prop_assert_eq!(y.dims(), &[len, c]);
        let want: Vec<f64> = idx
            .iter()
            .flat_map(|&i| f64s(&table[i as usize * c..(i as usize + 1) * c]))
            .collect();
        close("gather_rows", &down(&y), &want, 0.0, 0.0);
        let dy = g.vec(len * c, -2.0, 2.0);
        let s = BE.scatter_add_rows(&up(&dy, &[len, c]), &idx, v).unwrap();
        prop_assert_eq!(s.dims(), &[v, c]);
        let mut want = vec![0.0; v * c];
        for (r, &i) in idx.iter().enumerate() {
            for j in 0..c {
                want[i as usize * c + j] += dy[r * c + j] as f64;
            }
        }
        close("scatter_add_rows", &down(&s), &want, 1e-6, 1e-6);
    }

    /// Fourier features (§3.2): `[sin(2π·t·w) | cos(2π·t·w)]`, sin block first.
    #[test]
    fn fourier_features_match_definition(b in size(), f in size(), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let (t, w) = (g.vec(b, 0.0, 1.0), g.vec(f, -3.0, 3.0));
        let y = BE.fourier_features(&up(&t, &[b]), &up(&w, &[f])).unwrap();
        prop_assert_eq!(y.dims(), &[b, 2 * f]);
        let y = down(&y);
        for i in 0..b {
            for j in 0..f {
                let phi = 2.0 * PI * t[i] as f64 * w[j] as f64;
                // The phase is formed in f32: a few ulp of |φ|.
                let tol = 1e-6 + 5e-7 * phi.abs();
                let (s, c) = (y[i * 2 * f + j] as f64, y[i * 2 * f + f + j] as f64);
                prop_assert!((s - phi.sin()).abs() <= tol, "sin at ({}, {}): {} vs {}", i, j, s, phi.sin());
                prop_assert!((c - phi.cos()).abs() <= tol, "cos at ({}, {}): {} vs {}", i, j, c, phi.cos());
            }
        }
    }

    /// Patchify against its definition, and unpatchify as its exact inverse, both orders.
    #[test]
    fn patchify_matches_definition_and_unpatchify_inverts(
        b in 1usize..3, c in small(), p in 1usize..4, gh in 1usize..4, gw in 1usize..4,
        order in patch_order(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let (h, w) = (gh * p, gw * p);
        let x = g.vec(b * c * h * w, -2.0, 2.0);
        let xt = up(&x, &[b, c, h, w]);
        let y = BE.patchify(&xt, p, order).unwrap();
        let pc = p * p * c;
        prop_assert_eq!(y.dims(), &[b, gh * gw, pc]);
        let y = down(&y);
        for bi in 0..b {
            for ci in 0..c {
                for i in 0..gh {
                    for j in 0..gw {
                        for r in 0..p {
                            for s in 0..p {
                                let tok = i * gw + j; // §0 row-major grid
                                let got = y[(bi * gh * gw + tok) * pc + patch_pos(order, c, p, ci, r, s)];
                                let want = x[((bi * c + ci) * h + i * p + r) * w + j * p + s];
                                prop_assert_eq!(got, want);
                            }
                        }
                    }
                }
            }
        }
        let back = BE.unpatchify(&up(&y, &[b, gh * gw, pc]), c, (gh, gw), p, order).unwrap();
        prop_assert_eq!(back.dims(), &[b, c, h, w]);
        prop_assert_eq!(down(&back), x);
    }

    /// A ChannelFirst patchify followed by a linear map with the flattened conv weight
    /// `[C_out, C_in·p·p]` is the stride-`p` convolution of §0, tokens row-major.
    #[test]
    fn patchify_channel_first_is_a_strided_conv(
        b in 1usize..3, cin in small(), cout in small(), p in 1usize..4,
        gh in 1usize..4, gw in 1usize..4, seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let (h, w) = (gh * p, gw * p);
        let x = g.vec(b * cin * h * w, -1.0, 1.0);
        let wt = g.vec(cout * cin * p * p, -1.0, 1.0);
        let bias = g.vec(cout, -1.0, 1.0);
        let tokens = BE.patchify(&up(&x, &[b, cin, h, w]), p, PatchOrder::ChannelFirst).unwrap();
        let y = BE
            .linear(&tokens, &up(&wt, &[cout, cin * p * p]), Some(&up(&bias, &[cout])))
            .unwrap();
        prop_assert_eq!(y.dims(), &[b, gh * gw, cout]);
        let (mut want, mut scale) = (vec![0.0; b * gh * gw * cout], vec![0.0; b * gh * gw * cout]);
        for bi in 0..b {
            for co in 0..cout {
                for i in 0..gh {
                    for j in 0..gw {
                        let mut s = bias[co] as f64;
                        let mut sa = s.abs();
                        for ci in 0..cin {
                            for r in 0..p {
                                for q in 0..p {
                                    let wv = wt[((co * cin + ci) * p + r) * p + q] as f64;
                                    let xv = x[((bi * cin + ci) * h + i * p + r) * w + j * p + q] as f64;
                                    s += wv * xv;
                                    sa += (wv * xv).abs();
                                }
                            }
                        }
                        let out = (bi * gh * gw + i * gw + j) * cout + co;
                        want[out] = s;
                        scale[out] = sa;
                    }
                }
            }
        }
        close_scaled("patchify conv", &down(&y), &want, &scale, 1e-5);
    }

    /// ChannelLast unpatchify is the decoder layout of §2.6.2:
    /// `img[c, a·p + r, b·p + s] = y[a·gw + b, (r·p + s)·C + c]`.
    #[test]
    fn unpatchify_channel_last_is_the_decoder_layout(
        b in 1usize..3, c in small(), p in 1usize..5, gh in 1usize..4, gw in 1usize..4,
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let pc = p * p * c;
        let y = g.vec(b * gh * gw * pc, -2.0, 2.0);
        let img = BE.unpatchify(&up(&y, &[b, gh * gw, pc]), c, (gh, gw), p, PatchOrder::ChannelLast).unwrap();
        let (h, w) = (gh * p, gw * p);
        prop_assert_eq!(img.dims(), &[b, c, h, w]);
        let img = down(&img);
        for bi in 0..b {
            for ci in 0..c {
                for a in 0..gh {
                    for bb in 0..gw {
                        for r in 0..p {
                            for s in 0..p {
                                let got = img[((bi * c + ci) * h + a * p + r) * w + bb * p + s];
                                let want = y[(bi * gh * gw + a * gw + bb) * pc + (r * p + s) * c + ci];
                                prop_assert_eq!(got, want);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `permute0213`: `[A, B, C, D] → [A, C, B, D]`.
    #[test]
    fn permute0213_matches_definition(
        a in small(), b in size(), c in size(), d in small(), seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let x = g.vec(a * b * c * d, -1.0, 1.0);
        let y = BE.permute0213(&up(&x, &[a, b, c, d])).unwrap();
        prop_assert_eq!(y.dims(), &[a, c, b, d]);
        let y = down(&y);
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    for l in 0..d {
                        prop_assert_eq!(y[((i * c + k) * b + j) * d + l], x[((i * b + j) * c + k) * d + l]);
                    }
                }
            }
        }
    }

    /// `slice_mid` against its definition, and `concat_mid` of consecutive slices restores
    /// the tensor.
    #[test]
    fn slice_and_concat_mid(
        a in small(), mid in size(), c in size(), cut1 in 0usize..40, cut2 in 0usize..40,
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let x = g.vec(a * mid * c, -1.0, 1.0);
        let xt = up(&x, &[a, mid * c]);
        let (mut s0, mut s1) = (cut1 % (mid + 1), cut2 % (mid + 1));
        if s0 > s1 {
            std::mem::swap(&mut s0, &mut s1);
        }
        let parts: Vec<T> = [(0, s0), (s0, s1 - s0), (s1, mid - s1)]
            .iter()
            .map(|&(start, len)| {
                let y = BE.slice_mid(&xt, [a, mid, c], start, len).unwrap();
                assert_eq!(y.dims(), &[a, len, c]);
                let yv = down(&y);
                for i in 0..a {
                    for m in 0..len {
                        for j in 0..c {
                            assert_eq!(yv[(i * len + m) * c + j], x[(i * mid + start + m) * c + j]);
                        }
                    }
                }
                y
            })
            .collect();
        let refs: Vec<&T> = parts.iter().collect();
        let back = BE.concat_mid(&refs, a, c).unwrap();
        prop_assert_eq!(back.dims(), &[a, mid, c]);
        prop_assert_eq!(down(&back), x);
    }

    /// AdamW against a hand-computed update in PyTorch's order (the `AdamWStep` doc), over
    /// several consecutive steps, with an `eps` large enough that its placement matters.
    #[test]
    fn adamw_matches_pytorch_order(
        n in size(), lr in 1e-4f32..1e-1, beta1 in 0.5f32..0.99, beta2 in 0.9f32..0.9999,
        big_eps in any::<bool>(), wd in 0.0f32..0.1, grad_scale in 0.1f32..2.0,
        t0 in 1u64..1000, seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let eps = if big_eps { 1e-3 } else { 1e-8 };
        let p0 = g.vec(n, -0.5, 0.5);
        let (mut p, mut m, mut v) = (up(&p0, &[n]), BE.zeros(&[n]).unwrap(), BE.zeros(&[n]).unwrap());
        let (mut rp, mut rm, mut rv) = (f64s(&p0), vec![0.0f64; n], vec![0.0f64; n]);
        for step in t0..t0 + 4 {
            let grad = g.vec(n, -0.1, 0.1);
            let hp = AdamWStep { lr, beta1, beta2, eps, weight_decay: wd, step, grad_scale };
            let before = down(&p);
            BE.adamw_step(&mut p, &up(&grad, &[n]), &mut m, &mut v, &hp).unwrap();
            // The reference continues from the backend's own f32 state, so each step is
            // compared on its own.
            rp.iter_mut().zip(&before).for_each(|(r, &b)| *r = b as f64);
            let (lr, b1, b2, eps, wd) = (lr as f64, beta1 as f64, beta2 as f64, eps as f64, wd as f64);
            let bc1 = 1.0 - b1.powi(step as i32);
            let bc2 = 1.0 - b2.powi(step as i32);
            let mut upd = vec![0.0; n];
            let mut upd_scale = vec![0.0; n];
            // m's new value may cancel: bound its error by the size of its two terms.
            let m_scale: Vec<f64> = (0..n)
                .map(|i| rm[i].abs() + (grad_scale as f64 * grad[i] as f64).abs())
                .collect();
            for i in 0..n {
                let gi = grad_scale as f64 * grad[i] as f64;
                let decayed = rp[i] * (1.0 - lr * wd);
                rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
                rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
                let denom = rv[i].sqrt() / bc2.sqrt() + eps;
                let new = decayed - (lr / bc1) * rm[i] / denom;
                upd_scale[i] = (lr / bc1) * m_scale[i] / denom;
                upd[i] = new - rp[i];
                rp[i] = new;
            }
            let got_upd: Vec<f32> = down(&p).iter().zip(&before).map(|(&a, &b)| a - b).collect();
            // The update is compared relative to itself, plus what m's rounding moves it by,
            // plus the f32 rounding of p.
            for i in 0..n {
                let err = (got_upd[i] as f64 - upd[i]).abs();
                let tol = 1e-4 * upd[i].abs() + 1e-5 * upd_scale[i] + 2e-7 * rp[i].abs().max(1e-3);
                prop_assert!(err <= tol, "step {} element {}: update {} vs {}", step, i, got_upd[i], upd[i]);
            }
            close_scaled("adamw m", &down(&m), &rm, &m_scale, 1e-6);
            close("adamw v", &down(&v), &rv, 1e-12, 1e-5);
            // Keep the reference moments on the backend's f32 values.
            rm = f64s(&down(&m));
            rv = f64s(&down(&v));
        }
    }

    /// EMA `ema ← decay·ema + (1 − decay)·param`.
    #[test]
    fn ema_matches_definition(n in size(), decay in 0.0f32..1.0, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let (e0, p) = (g.vec(n, -2.0, 2.0), g.vec(n, -2.0, 2.0));
        let mut e = up(&e0, &[n]);
        BE.ema_update(&mut e, &up(&p, &[n]), decay).unwrap();
        let d = decay as f64;
        let want: Vec<f64> = e0.iter().zip(&p).map(|(&a, &b)| d * a as f64 + (1.0 - d) * b as f64).collect();
        close("ema", &down(&e), &want, 1e-6, 1e-6);
    }
}

// ------------------------------------------------------------- deterministic tests

/// Sizes that take the threaded paths: a gemm above its threading threshold and a batch
/// of products split across threads (left operand transposed, right batched), plus a
/// broadcast right operand folded into the rows.
#[test]
fn matmul_threaded_paths() {
    check_matmul(40, 48, 56, false, false, &Batch::None, 1);
    check_matmul(64, 33, 70, true, true, &Batch::None, 2);
    check_matmul(17, 19, 23, true, false, &Batch::Shared(vec![5]), 3);
    check_matmul(19, 17, 23, false, true, &Batch::Shared(vec![2, 3]), 4);
    check_matmul(37, 29, 31, true, false, &Batch::Broadcast(vec![4]), 5);
    check_matmul(37, 29, 31, false, false, &Batch::Broadcast(vec![3, 2]), 6);
    check_matmul(130, 70, 260, false, true, &Batch::None, 7);
}

/// RoPE with the §3.4 tables: a one-hot on channel `2p` rotates into channels `2p` and
/// `2p + 1` only (adjacent pairs, not the half-split layout), by the angle of that pair;
/// the inverse undoes the forward.
#[test]
fn rope_adjacent_pairs_with_spec_tables() {
    let (hd, grid) = (8, 3);
    let n = grid * grid;
    let (cos, sin) = rope_tables(hd, grid);
    let (ct, st) = (up(&cos, &[n, hd]), up(&sin, &[n, hd]));
    for ch in 0..hd {
        let mut x = vec![0.0f32; n * hd];
        for t in 0..n {
            x[t * hd + ch] = 1.0;
        }
        let y = down(&BE.rope(&up(&x, &[1, n, hd]), &ct, &st, false).unwrap());
        let pair = ch / 2;
        for t in 0..n {
            for c in 0..hd {
                let v = y[t * hd + c];
                let want = match (c / 2 == pair, ch % 2, c % 2) {
                    (false, _, _) => 0.0,
                    (true, 0, 0) => cos[t * hd + c],
                    (true, 0, _) => sin[t * hd + c],
                    (true, _, 0) => -sin[t * hd + c],
                    (true, _, _) => cos[t * hd + c],
                };
                assert!(
                    (v - want).abs() <= 1e-6,
                    "one-hot channel {ch}, token {t}, channel {c}: {v} vs {want}"
                );
            }
        }
    }
    // Row-half channels rotate with the row index, column-half channels with the column.
    let t = grid + 2; // row 1, column 2
    let a_row = 1.0f64; // θ_0 = 1
    let a_col = 2.0f64;
    assert!((cos[t * hd] as f64 - a_row.cos()).abs() < 1e-6);
    assert!((cos[t * hd + hd / 2] as f64 - a_col.cos()).abs() < 1e-6);
    let mut g = Gen::new(11);
    let x = g.vec(2 * n * hd, -2.0, 2.0);
    let xt = up(&x, &[2, n, hd]);
    let y = BE.rope(&xt, &ct, &st, false).unwrap();
    let back = down(&BE.rope(&y, &ct, &st, true).unwrap());
    close("rope inverse(forward)", &back, &f64s(&x), 1e-6, 1e-6);
    // A rotation keeps the length of every pair.
    let yv = down(&y);
    for p in 0..x.len() / 2 {
        let nx = (x[2 * p] as f64).hypot(x[2 * p + 1] as f64);
        let ny = (yv[2 * p] as f64).hypot(yv[2 * p + 1] as f64);
        assert!((nx - ny).abs() < 1e-5, "pair {p}: |x| {nx} vs |y| {ny}");
    }
}

/// §3.3 broadcasting pinned by hand: with `x = 0`, `y[b, n] = shift[b, n / (N/Nc)]`, so a
/// conditioning token covers a run of consecutive tokens (not every `Nc`-th token).
#[test]
fn modulate_conditioning_tokens_cover_consecutive_runs() {
    let (b, n, nc, c) = (2, 6, 2, 1);
    let shift: Vec<f32> = (0..b * nc).map(|i| 10.0 * i as f32).collect();
    let y = down(
        &BE.modulate(
            &BE.zeros(&[b, n, c]).unwrap(),
            Some(&up(&shift, &[b, nc, c])),
            None,
        )
        .unwrap(),
    );
    assert_eq!(
        y,
        vec![0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 30.0, 30.0, 30.0]
    );
}

/// Fourier features put the sin block first (§3.2), pinned on values with a known answer.
#[test]
fn fourier_features_sin_block_first() {
    let y = down(
        &BE.fourier_features(&up(&[0.25, 0.5], &[2]), &up(&[1.0, 0.5], &[2]))
            .unwrap(),
    );
    // t·w = 0.25 → φ = π/2; 0.125 → π/4; 0.5 → π; 0.25 → π/2.
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let want = [1.0, h, 0.0, h, 0.0, 1.0, -1.0, 0.0];
    close("fourier", &y, &want, 1e-6, 0.0);
}

/// AdamW at step 1 with zero moments and no decay moves each weight by `lr·g/(|g| + eps)`.
#[test]
fn adamw_first_step_closed_form() {
    let g = [0.5f32, -0.25, 1e-3, 0.0];
    let mut p = up(&[1.0, 1.0, 1.0, 1.0], &[4]);
    let (mut m, mut v) = (BE.zeros(&[4]).unwrap(), BE.zeros(&[4]).unwrap());
    let hp = AdamWStep {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-3,
        weight_decay: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    BE.adamw_step(&mut p, &up(&g, &[4]), &mut m, &mut v, &hp)
        .unwrap();
    let want: Vec<f64> = g
        .iter()
        .map(|&gi| 1.0 - 0.01 * gi as f64 / ((gi as f64).abs() + 1e-3))
        .collect();
    close("adamw step 1", &down(&p), &want, 1e-7, 0.0);
}

/// Composite helpers of the trait: whole-tensor sums and the scalar download.
#[test]
fn whole_tensor_reductions() {
    let x = up(&[1.0, -2.0, 3.0, 4.0, 0.5, -0.5], &[2, 3]);
    assert_eq!(BE.scalar(&BE.sum_all(&x).unwrap()).unwrap(), 6.0);
    assert_eq!(BE.scalar(&BE.sum_sq_all(&x).unwrap()).unwrap(), 30.5);
    assert_eq!(BE.scalar(&BE.mean_all(&x).unwrap()).unwrap(), 1.0);
    assert!(BE.scalar(&x).is_err());
    assert_eq!(down(&BE.full(&[2, 2], 1.5).unwrap()), vec![1.5; 4]);
    assert_eq!(down(&BE.zeros(&[3]).unwrap()), vec![0.0; 3]);
}

// ------------------------------------------------------------------ shape errors

/// Collects shape-error cases: each must return `Err` (not panic) whose message contains,
/// for every group, at least one of the group's strings.
#[derive(Default)]
struct ErrCases {
    failures: Vec<String>,
}

impl ErrCases {
    fn case<R: std::fmt::Debug>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<R>,
        groups: &[&[&str]],
    ) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Err(_) => self.failures.push(format!("{name}: panicked")),
            Ok(Ok(v)) => self
                .failures
                .push(format!("{name}: expected an error, got Ok({v:?})")),
            Ok(Err(e)) => {
                let msg = e.to_string();
                for g in groups {
                    if !g.iter().any(|s| msg.contains(s)) {
                        self.failures
                            .push(format!("{name}: message {msg:?} names none of {g:?}"));
                    }
                }
            }
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} case(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn z(dims: &[usize]) -> T {
    BE.zeros(dims).unwrap()
}

#[test]
fn shape_errors_elementwise_and_reductions() {
    let mut e = ErrCases::default();
    e.case(
        "binary",
        || BE.binary(Binary::Add, &z(&[2, 3]), &z(&[3, 2])),
        &[&["[2, 3]"], &["[3, 2]"]],
    );
    e.case(
        "axpy",
        || BE.axpy(1.0, &z(&[2, 3]), &z(&[6])),
        &[&["[2, 3]"], &["[6]"]],
    );
    e.case(
        "unary_backward",
        || BE.unary_backward(Unary::Silu, &z(&[4]), &z(&[5])),
        &[&["[4]"], &["[5]"]],
    );
    e.case(
        "bcast_affine view",
        || BE.bcast_affine(&z(&[2, 3]), None, None, [2, 2, 2]),
        &[&["[2, 3]"], &["[2, 2, 2]"]],
    );
    e.case(
        "bcast_affine coefficient",
        || BE.bcast_affine(&z(&[2, 3]), Some(&z(&[2])), None, [1, 3, 2]),
        &[&["[2]"], &["3"]],
    );
    e.case(
        "reduce view",
        || BE.reduce(Reduce::Sum, &z(&[7]), [2, 2, 2]),
        &[&["[7]"], &["[2, 2, 2]"]],
    );
    e.finish();
}

#[test]
fn shape_errors_matmul_and_linear() {
    let mut e = ErrCases::default();
    e.case(
        "matmul contracted",
        || BE.matmul(&z(&[2, 3]), &z(&[4, 5]), false, false),
        &[&["[2, 3]"], &["[4, 5]"]],
    );
    e.case(
        "matmul contracted (transposed)",
        || BE.matmul(&z(&[3, 2]), &z(&[4, 5]), true, true),
        &[&["[3, 2]"], &["[4, 5]"]],
    );
    e.case(
        "matmul batch",
        || BE.matmul(&z(&[2, 3, 4]), &z(&[3, 4, 5]), false, false),
        &[&["[2, 3, 4]"], &["[3, 4, 5]"]],
    );
    e.case(
        "matmul rank 1",
        || BE.matmul(&z(&[3]), &z(&[3, 2]), false, false),
        &[&["[3]"]],
    );
    e.case(
        "linear in",
        || BE.linear(&z(&[2, 3]), &z(&[4, 5]), None),
        &[&["[2, 3]"], &["[4, 5]", "[2, 5]"]],
    );
    e.case(
        "linear bias",
        || BE.linear(&z(&[2, 3]), &z(&[4, 3]), Some(&z(&[5]))),
        &[&["[5]"], &["[4]", "[4, 3]"]],
    );
    e.case(
        "linear_backward dy",
        || BE.linear_backward(&z(&[2, 3]), &z(&[4, 3]), true, &z(&[2, 5])),
        &[&["[2, 5]"], &["[2, 4]"]],
    );
    e.finish();
}

#[test]
fn shape_errors_norms_softmax_attention() {
    let mut e = ErrCases::default();
    e.case(
        "layernorm gamma",
        || BE.layernorm(&z(&[2, 3]), Some(&z(&[4])), None, 1e-5),
        &[&["[4]"], &["[3]", "[2, 3]"]],
    );
    e.case(
        "layernorm beta",
        || BE.layernorm(&z(&[2, 3]), None, Some(&z(&[2])), 1e-5),
        &[&["[2]"], &["[3]", "[2, 3]"]],
    );
    e.case(
        "layernorm_backward dy",
        || {
            let (_, st) = BE.layernorm(&z(&[2, 3]), None, None, 1e-5)?;
            BE.layernorm_backward(&z(&[2, 3]), &st, None, false, &z(&[3, 2]))
        },
        &[&["[2, 3]"], &["[3, 2]"]],
    );
    e.case(
        "layernorm_backward stats",
        || {
            let (_, st) = BE.layernorm(&z(&[5, 3]), None, None, 1e-5)?;
            BE.layernorm_backward(&z(&[2, 3]), &st, None, false, &z(&[2, 3]))
        },
        &[&["[5]"], &["2"]],
    );
    e.case(
        "layernorm_backward stats mean",
        || {
            let (_, st) = BE.layernorm(&z(&[2, 3]), None, None, 1e-5)?;
            let st = NormStats {
                mean: z(&[1]),
                rstd: st.rstd,
            };
            BE.layernorm_backward(&z(&[2, 3]), &st, None, false, &z(&[2, 3]))
        },
        &[&["[1]"], &["2"]],
    );
    e.case(
        "rmsnorm weight",
        || BE.rmsnorm(&z(&[2, 3]), Some(&z(&[4])), 1e-6),
        &[&["[4]"], &["[3]", "[2, 3]"]],
    );
    e.case(
        "rmsnorm_backward dy",
        || {
            let (_, st) = BE.rmsnorm(&z(&[2, 3]), None, 1e-6)?;
            BE.rmsnorm_backward(&z(&[2, 3]), &st, None, &z(&[2, 4]))
        },
        &[&["[2, 3]"], &["[2, 4]"]],
    );
    e.case(
        "softmax_backward",
        || BE.softmax_backward(&z(&[2, 3]), &z(&[2, 4])),
        &[&["[2, 3]"], &["[2, 4]"]],
    );
    e.case(
        "attention k",
        || BE.attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 5, 8]), &z(&[1, 2, 4, 8]), 1.0),
        &[&["[1, 2, 4, 8]"], &["[1, 2, 5, 8]"]],
    );
    e.case(
        "attention v",
        || BE.attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 4, 8]), &z(&[1, 2, 4, 6]), 1.0),
        &[&["[1, 2, 4, 8]"], &["[1, 2, 4, 6]"]],
    );
    e.case(
        "attention_backward dout",
        || {
            let q = z(&[1, 4, 8]);
            BE.attention_backward(&q, &q, &q, &z(&[1, 4, 4]), &z(&[1, 4, 6]), 1.0)
        },
        &[&["[1, 4, 8]"], &["[1, 4, 6]"]],
    );
    e.finish();
}

#[test]
fn shape_errors_transformer_ops() {
    let mut e = ErrCases::default();
    e.case(
        "rope table",
        || BE.rope(&z(&[1, 4, 6]), &z(&[3, 6]), &z(&[4, 6]), false),
        &[&["[3, 6]"], &["[4, 6]", "[1, 4, 6]"]],
    );
    e.case(
        "rope odd head dim",
        || BE.rope(&z(&[1, 4, 5]), &z(&[4, 5]), &z(&[4, 5]), false),
        &[&["[1, 4, 5]"]],
    );
    e.case("swiglu odd", || BE.swiglu(&z(&[2, 5])), &[&["[2, 5]"]]);
    e.case(
        "swiglu_backward dy",
        || BE.swiglu_backward(&z(&[2, 6]), &z(&[2, 4])),
        &[&["[2, 4]"], &["[2, 3]", "[2, 6]"]],
    );
    e.case(
        "modulate shift",
        || BE.modulate(&z(&[2, 6, 4]), Some(&z(&[2, 4, 4])), None),
        &[&["[2, 4, 4]"], &["[2, 6, 4]", "[2, 1, 4]"]],
    );
    e.case(
        "modulate channels",
        || BE.modulate(&z(&[2, 6, 4]), None, Some(&z(&[2, 1, 3]))),
        &[&["[2, 1, 3]"], &["[2, 6, 4]", "[2, 1, 4]"]],
    );
    e.case(
        "modulate shift vs scale",
        || BE.modulate(&z(&[2, 6, 4]), Some(&z(&[2, 2, 4])), Some(&z(&[2, 3, 4]))),
        &[&["[2, 2, 4]"], &["[2, 3, 4]"]],
    );
    e.case(
        "modulate_backward dy",
        || BE.modulate_backward(&z(&[2, 6, 4]), None, Some(&z(&[2, 1, 4])), &z(&[2, 6, 3])),
        &[&["[2, 6, 4]"], &["[2, 6, 3]"]],
    );
    e.case(
        "gate",
        || BE.gate(&z(&[2, 6, 4]), &z(&[2, 6, 3])),
        &[&["[2, 6, 3]"], &["[2, 6, 4]", "[2, 1, 4]"]],
    );
    e.case(
        "gate batch",
        || BE.gate(&z(&[2, 6, 4]), &z(&[3, 1, 4])),
        &[&["[3, 1, 4]"], &["[2, 6, 4]", "[2, 1, 4]"]],
    );
    e.case(
        "gate_backward dy",
        || BE.gate_backward(&z(&[2, 6, 4]), &z(&[2, 1, 4]), &z(&[2, 5, 4])),
        &[&["[2, 6, 4]"], &["[2, 5, 4]"]],
    );
    e.finish();
}

#[test]
fn shape_errors_embedding_and_layout() {
    let mut e = ErrCases::default();
    e.case(
        "gather_rows index",
        || BE.gather_rows(&z(&[3, 4]), &[0, 5]),
        &[&["5"], &["3"]],
    );
    e.case(
        "gather_rows rank",
        || BE.gather_rows(&z(&[12]), &[0]),
        &[&["[12]"]],
    );
    e.case(
        "scatter_add_rows count",
        || BE.scatter_add_rows(&z(&[2, 4]), &[0, 1, 2], 3),
        &[&["[2, 4]"], &["[3, 4]"]],
    );
    e.case(
        "scatter_add_rows index",
        || BE.scatter_add_rows(&z(&[2, 4]), &[0, 3], 3),
        &[&["3"]],
    );
    e.case(
        "fourier t",
        || BE.fourier_features(&z(&[2, 1]), &z(&[4])),
        &[&["[2, 1]"]],
    );
    e.case(
        "fourier w",
        || BE.fourier_features(&z(&[2]), &z(&[4, 1])),
        &[&["[4, 1]"]],
    );
    e.case(
        "patchify size",
        || BE.patchify(&z(&[1, 3, 5, 4]), 2, PatchOrder::ChannelFirst),
        &[&["[1, 3, 5, 4]"], &["2"]],
    );
    e.case(
        "patchify p = 0",
        || BE.patchify(&z(&[1, 3, 4, 4]), 0, PatchOrder::ChannelLast),
        &[&["[1, 3, 4, 4]"]],
    );
    e.case(
        "patchify rank",
        || BE.patchify(&z(&[3, 4, 4]), 2, PatchOrder::ChannelLast),
        &[&["[3, 4, 4]"]],
    );
    e.case(
        "unpatchify",
        || BE.unpatchify(&z(&[1, 4, 12]), 3, (2, 3), 2, PatchOrder::ChannelLast),
        &[&["[1, 4, 12]"], &["[1, 6, 12]"]],
    );
    e.case(
        "permute0213 rank",
        || BE.permute0213(&z(&[2, 3, 4])),
        &[&["[2, 3, 4]"]],
    );
    e.case(
        "slice_mid view",
        || BE.slice_mid(&z(&[2, 3]), [2, 2, 2], 0, 1),
        &[&["[2, 3]"], &["[2, 2, 2]"]],
    );
    e.case(
        "slice_mid range",
        || BE.slice_mid(&z(&[2, 6]), [2, 3, 2], 2, 2),
        &[&["2..4"], &["3"]],
    );
    e.case(
        "concat_mid",
        || BE.concat_mid(&[&z(&[2, 4]), &z(&[7])], 2, 2),
        &[&["[7]"]],
    );
    e.finish();
}

#[test]
fn shape_errors_optimiser_and_memory() {
    let hp = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    let mut e = ErrCases::default();
    e.case(
        "adamw grad",
        || {
            let (mut p, mut m, mut v) = (z(&[3]), z(&[3]), z(&[3]));
            BE.adamw_step(&mut p, &z(&[4]), &mut m, &mut v, &hp)
        },
        &[&["[3]"], &["[4]"]],
    );
    e.case(
        "adamw v",
        || {
            let (mut p, mut m, mut v) = (z(&[3]), z(&[3]), z(&[2]));
            BE.adamw_step(&mut p, &z(&[3]), &mut m, &mut v, &hp)
        },
        &[&["[3]"], &["[2]"]],
    );
    e.case(
        "ema",
        || BE.ema_update(&mut z(&[3]), &z(&[2, 2]), 0.9),
        &[&["[3]"], &["[2, 2]"]],
    );
    e.case(
        "upload",
        || BE.upload(&[0.0; 5], &[2, 3]),
        &[&["[2, 3]"], &["5"]],
    );
    e.case(
        "rank too large",
        || BE.upload(&[0.0], &[1, 1, 1, 1, 1, 1, 1]),
        &[&["7"]],
    );
    e.case(
        "reshape",
        || z(&[2, 3]).reshape(&[4, 2]),
        &[&["[2, 3]"], &["[4, 2]"]],
    );
    e.finish();

    // A failed update leaves every tensor as it was.
    let (mut p, mut m, mut v) = (up(&[1.0, 2.0, 3.0], &[3]), z(&[3]), z(&[2]));
    assert!(BE
        .adamw_step(&mut p, &z(&[3]), &mut m, &mut v, &hp)
        .is_err());
    assert_eq!(down(&p), vec![1.0, 2.0, 3.0]);
}

/// Sizes and ranges that overflow `usize` arithmetic are arguments a user controls: they
/// must give an error, not an overflow panic (debug) or an out-of-bounds access (release).
#[test]
fn absurd_sizes_are_errors_not_panics() {
    let big = usize::MAX / 2 + 1;
    let mut e = ErrCases::default();
    e.case(
        "slice_mid start + len overflows",
        || BE.slice_mid(&z(&[2, 6]), [2, 3, 2], usize::MAX, 2),
        &[],
    );
    e.case(
        "bcast_affine view product overflows",
        || BE.bcast_affine(&z(&[4]), None, None, [big, 2, 4]),
        &[],
    );
    e.case(
        "reduce view product overflows",
        || BE.reduce(Reduce::Sum, &z(&[4]), [2, big, 4]),
        &[],
    );
    e.case(
        "unpatchify grid product overflows",
        || BE.unpatchify(&z(&[1, 4, 12]), 3, (big, 2), 2, PatchOrder::ChannelLast),
        &[],
    );
    e.case(
        "concat_mid outer·inner overflows",
        || BE.concat_mid(&[&z(&[4])], big, 4),
        &[],
    );
    e.case(
        "full with more elements than usize holds",
        || BE.full(&[big, 2], 0.0),
        &[],
    );
    e.case(
        "upload with more elements than usize holds",
        || BE.upload(&[], &[big, 2]),
        &[],
    );
    e.finish();
}

/// `permute0213` on shapes large enough to be threaded and to span several 32×32 tiles,
/// with row counts that do not divide into tiles or threads.
#[test]
fn permute0213_threaded_tiles_match_definition() {
    for [a, b, c, d] in [
        [2, 300, 150, 1],
        [2, 65, 97, 7],
        [1, 33, 2049, 1],
        [3, 1000, 31, 2],
    ] {
        let x: Vec<f32> = (0..a * b * c * d).map(|v| v as f32).collect();
        let y = down(&BE.permute0213(&up(&x, &[a, b, c, d])).unwrap());
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    for l in 0..d {
                        let (dst, src) =
                            (((i * c + k) * b + j) * d + l, ((i * b + j) * c + k) * d + l);
                        assert_eq!(y[dst], x[src], "[{a},{b},{c},{d}] at {i},{j},{k},{l}");
                    }
                }
            }
        }
    }
}
