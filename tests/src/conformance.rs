//! The backend conformance suite, written once and run on every backend present: each
//! function below exercises one op (forward and backward) on a backend `B` and compares it
//! with [`CpuBackend`], the oracle, on fixed awkward shapes (sizes that are not multiples
//! of the vector width or of a tile, size-1 axes, 257 and 261 tokens) and on shapes drawn
//! from a seeded Philox stream.
//!
//! Before every op the memory pool is filled with NaN buffers of the output's size (see
//! [`Ctx::poison`]), so a kernel that leaves part of its output unwritten reads back a
//! NaN, which no tolerance accepts. Tolerances are stated per op as `|got − want| ≤ abs +
//! rel·|want|`; the worst errors seen are printed (`WORST <backend> <op>: ...`) and kept in
//! [`worst_errors`].

// Test code: a failing op or upload is a test failure, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use rae_backend_cuda::CudaBackend;
use rae_backend_wgpu::{WgpuBackend, WgpuOptions};

use rae_core::backend::{AdamWStep, Backend, Binary, PatchOrder, Reduce, Unary};
use rae_core::rng::PhiloxStream;
use rae_core::{CpuBackend, PhiloxKey, Tensor};

/// An element-wise tolerance: `|got − want| ≤ abs + rel·|want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    /// Absolute part.
    pub abs: f64,
    /// Relative part.
    pub rel: f64,
}

impl Tol {
    /// Bit-for-bit equal values (layout ops, gathers, Philox fills).
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

    /// A tolerance from its absolute and relative parts.
    pub const fn new(abs: f64, rel: f64) -> Self {
        Tol { abs, rel }
    }
}

/// Worst errors per `"<backend> <op>"`: (largest absolute error, largest relative error
/// over elements with `|want| > 1e-3`).
static WORST: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());

/// The worst errors recorded so far, sorted by key `"<backend> <op>"`.
pub fn worst_errors() -> Vec<(String, f64, f64)> {
    let w = WORST.lock().unwrap_or_else(|e| e.into_inner());
    w.iter().map(|(k, &(a, r))| (k.clone(), a, r)).collect()
}

fn record(key: &str, abs: f64, rel: f64) {
    let mut w = WORST.lock().unwrap_or_else(|e| e.into_inner());
    let e = w.entry(key.to_string()).or_insert((0.0, 0.0));
    e.0 = e.0.max(abs);
    e.1 = e.1.max(rel);
}

/// Values from a seeded Philox stream (reproducible shapes and data).
#[derive(Debug, Clone)]
pub struct Gen(PhiloxStream);

impl Gen {
    /// A generator on stream `stream` of seed 2024.
    pub fn new(stream: u64) -> Self {
        Gen(PhiloxStream::new(2024, stream))
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut v = vec![0.0f32; n];
        self.0.uniforms(&mut v);
        v.iter_mut().for_each(|x| *x = lo + (hi - lo) * *x);
        v
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        let u = self.0.uniform() as f64;
        (lo + ((hi - lo + 1) as f64 * u) as usize).min(hi)
    }
}

/// One op test's state: the backend under test, the oracle, the data generator and the
/// backend's label.
pub struct Ctx<'a, B: Backend> {
    /// The backend under test.
    pub b: &'a B,
    /// The oracle.
    pub cpu: CpuBackend,
    /// Data and shape generator.
    pub gen: Gen,
    label: String,
    op: &'static str,
}

impl<B: Backend> std::fmt::Debug for Ctx<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.label)
            .field("op", &self.op)
            .finish()
    }
}

/// A tensor on the backend under test and the same values on the CPU.
pub type Pair<B> = (Tensor<B>, Tensor<CpuBackend>);

impl<'a, B: Backend> Ctx<'a, B> {
    /// A context for op `op` (its name keys the worst-error table).
    pub fn new(b: &'a B, op: &'static str) -> Self {
        let stream = op
            .bytes()
            .fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
        Ctx {
            b,
            cpu: CpuBackend::new(),
            gen: Gen::new(stream),
            label: b.name(),
            op,
        }
    }

    /// Uploads `data` to both backends.
    pub fn pair_from(&self, data: &[f32], dims: &[usize]) -> Pair<B> {
        (
            self.b
                .upload(data, dims)
                .expect("upload to the backend under test"),
            self.cpu.upload(data, dims).expect("upload to the CPU"),
        )
    }

    /// Random values uniform in `[lo, hi)` on both backends.
    pub fn rand(&mut self, dims: &[usize], lo: f32, hi: f32) -> Pair<B> {
        let n: usize = dims.iter().product();
        let data = self.gen.vec(n, lo, hi);
        self.pair_from(&data, dims)
    }

    /// Fills the memory pool with NaN buffers of `n` floats (allocated, then dropped), so
    /// the next allocation of that size likely reuses one: an unwritten output element then
    /// reads back as NaN.
    pub fn poison(&self, n: usize) {
        let bufs: Vec<Tensor<B>> = (0..4)
            .map(|_| self.b.full(&[n], f32::NAN).expect("NaN fill"))
            .collect();
        self.b.sync().expect("sync after the NaN fill");
        drop(bufs);
    }

    /// Compares `got` with `want` (shape and values); panics naming the op, the case and
    /// the first element out of tolerance.
    pub fn check(&self, case: &str, got: &Tensor<B>, want: &Tensor<CpuBackend>, tol: Tol) {
        assert_eq!(
            got.dims(),
            want.dims(),
            "{} {}: {case}: shape differs from the CPU's",
            self.label,
            self.op
        );
        let g = self.b.download(got).expect("download");
        let w = self.cpu.download(want).expect("download from the CPU");
        self.check_vals(case, &g, &w, tol);
    }

    /// [`Ctx::check`] on host values.
    pub fn check_vals(&self, case: &str, got: &[f32], want: &[f32], tol: Tol) {
        assert_eq!(
            got.len(),
            want.len(),
            "{} {}: {case}: length differs",
            self.label,
            self.op
        );
        let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g64, w64) = (g as f64, w as f64);
            let err = (g64 - w64).abs();
            let ok = if tol == Tol::EXACT {
                g.to_bits() == w.to_bits()
            } else {
                err <= tol.abs + tol.rel * w64.abs()
            };
            assert!(
                ok,
                "{} {}: {case}: element {i} of {}: got {g:e}, CPU {w:e} (error {err:.3e}, \
                 tolerance {:.1e} + {:.1e}·|want|)",
                self.label,
                self.op,
                got.len(),
                tol.abs,
                tol.rel
            );
            worst_abs = worst_abs.max(err);
            if w64.abs() > 1e-3 {
                worst_rel = worst_rel.max(err / w64.abs());
            }
        }
        record(&format!("{} {}", self.label, self.op), worst_abs, worst_rel);
    }

    /// Prints the worst errors of this op (shown with `--nocapture`).
    pub fn report(&self) {
        let key = format!("{} {}", self.label, self.op);
        if let Some((_, a, r)) = worst_errors().into_iter().find(|(k, _, _)| *k == key) {
            eprintln!("WORST {key}: abs {a:.3e} rel {r:.3e}");
        }
    }
}

/// Element-wise sizes: scalar-path lengths (not multiples of 4), vector-path lengths,
/// size-1 axes, token counts 257 and 261, and one size that needs several grid rows.
const ELEMENTWISE_DIMS: &[&[usize]] = &[
    &[1],
    &[3],
    &[4],
    &[7],
    &[2, 3, 5],
    &[257, 3],
    &[261, 8],
    &[1, 261, 1],
    &[33_001],
    &[64, 1024],
];

/// Every [`Unary`] forward and backward.
pub fn unary<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "unary");
    let ops = [
        Unary::Silu,
        Unary::GeluErf,
        Unary::GeluTanh,
        Unary::Sigmoid,
        Unary::Square,
        Unary::Abs,
    ];
    // Exact up to the device's exp/erf/tanh, which differ from libm by a few ulp; the
    // tanh-GELU derivative cancels `1 + tanh(u)` near u ≪ 0 (an ulp of tanh there is 6e-8,
    // amplified by x·du ≈ 20), hence the absolute part.
    let tol = Tol::new(1e-5, 1e-5);
    for dims in ELEMENTWISE_DIMS {
        let n: usize = dims.iter().product();
        let (x, xc) = cx.rand(dims, -6.0, 6.0);
        let (dy, dyc) = cx.rand(dims, -2.0, 2.0);
        for op in ops {
            cx.poison(n);
            let y = b.unary(op, &x).unwrap();
            cx.check(
                &format!("{op:?} {dims:?}"),
                &y,
                &cx.cpu.unary(op, &xc).unwrap(),
                tol,
            );
            cx.poison(n);
            let dx = b.unary_backward(op, &x, &dy).unwrap();
            let want = cx.cpu.unary_backward(op, &xc, &dyc).unwrap();
            cx.check(&format!("{op:?} backward {dims:?}"), &dx, &want, tol);
        }
    }
    // Large arguments: tanh and exp must not overflow into NaN; exact zeros for Abs'.
    let big = [-100.0, -30.0, -0.0, 0.0, 30.0, 100.0, 1e-30];
    let (x, xc) = cx.pair_from(&big, &[7]);
    let (dy, dyc) = cx.pair_from(&[1.0; 7], &[7]);
    for op in ops {
        let y = b.unary(op, &x).unwrap();
        cx.check(
            &format!("{op:?} large"),
            &y,
            &cx.cpu.unary(op, &xc).unwrap(),
            tol,
        );
        let dx = b.unary_backward(op, &x, &dy).unwrap();
        let want = cx.cpu.unary_backward(op, &xc, &dyc).unwrap();
        cx.check(&format!("{op:?} backward large"), &dx, &want, tol);
    }
    cx.report();
}

/// [`Binary`] ops, `scale` and `axpy`.
pub fn binary<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "binary/scale/axpy");
    let tol = Tol::new(0.0, 1e-6);
    for dims in ELEMENTWISE_DIMS {
        let n: usize = dims.iter().product();
        let (x, xc) = cx.rand(dims, -3.0, 3.0);
        let (y, yc) = cx.rand(dims, -3.0, 3.0);
        for op in [Binary::Add, Binary::Sub, Binary::Mul] {
            cx.poison(n);
            let z = b.binary(op, &x, &y).unwrap();
            let want = cx.cpu.binary(op, &xc, &yc).unwrap();
            cx.check(&format!("{op:?} {dims:?}"), &z, &want, tol);
        }
        cx.poison(n);
        let z = b.scale(&x, -0.37).unwrap();
        cx.check(
            &format!("scale {dims:?}"),
            &z,
            &cx.cpu.scale(&xc, -0.37).unwrap(),
            tol,
        );
        cx.poison(n);
        let z = b.axpy(1.7, &x, &y).unwrap();
        let want = cx.cpu.axpy(1.7, &xc, &yc).unwrap();
        cx.check(&format!("axpy {dims:?}"), &z, &want, tol);
    }
    cx.report();
}

/// `upload`, `download`, `full`, `zeros`, including empty tensors.
pub fn memory<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "upload/full");
    for dims in [&[0usize][..], &[1], &[5], &[257, 3], &[2, 0, 3], &[4096]] {
        let n: usize = dims.iter().product();
        let data = cx.gen.vec(n, -1.0, 1.0);
        let (x, xc) = cx.pair_from(&data, dims);
        cx.check(&format!("roundtrip {dims:?}"), &x, &xc, Tol::EXACT);
        cx.poison(n);
        let f = b.full(dims, -2.5).unwrap();
        cx.check(
            &format!("full {dims:?}"),
            &f,
            &cx.cpu.full(dims, -2.5).unwrap(),
            Tol::EXACT,
        );
        cx.poison(n);
        let z = b.zeros(dims).unwrap();
        cx.check(
            &format!("zeros {dims:?}"),
            &z,
            &cx.cpu.zeros(dims).unwrap(),
            Tol::EXACT,
        );
    }
    let err = b.upload(&[1.0, 2.0], &[3]).unwrap_err();
    let cpu_err = cx.cpu.upload(&[1.0, 2.0], &[3]).unwrap_err();
    assert_eq!(
        err, cpu_err,
        "upload with a wrong length must give the CPU's error"
    );
    cx.report();
}

/// `bcast_affine` on the views the models use (bias, per-channel, per-sample).
pub fn bcast_affine<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "bcast_affine");
    let tol = Tol::new(0.0, 1e-6);
    let views: &[[usize; 3]] = &[
        [1, 1, 1],
        [257, 33, 1],
        [2, 3, 65],
        [1, 4, 261],
        [3, 5, 8],
        [2, 1, 7],
    ];
    for &dims in views {
        let n = dims[0] * dims[1] * dims[2];
        let (x, xc) = cx.rand(&[n], -2.0, 2.0);
        let (a, ac) = cx.rand(&[dims[1]], 0.5, 1.5);
        let (c, cc) = cx.rand(&[dims[1]], -1.0, 1.0);
        for (ua, ub) in [(true, true), (true, false), (false, true), (false, false)] {
            cx.poison(n);
            let y = b
                .bcast_affine(&x, ua.then_some(&a), ub.then_some(&c), dims)
                .unwrap();
            let want = cx
                .cpu
                .bcast_affine(&xc, ua.then_some(&ac), ub.then_some(&cc), dims)
                .unwrap();
            cx.check(&format!("{dims:?} a={ua} b={ub}"), &y, &want, tol);
        }
    }
    let (x, _) = cx.rand(&[10], 0.0, 1.0);
    let (a, _) = cx.rand(&[3], 0.0, 1.0);
    let (xc2, ac2) = (cx.cpu.zeros(&[10]).unwrap(), cx.cpu.zeros(&[3]).unwrap());
    assert_eq!(
        b.bcast_affine(&x, Some(&a), None, [2, 5, 1]).unwrap_err(),
        cx.cpu
            .bcast_affine(&xc2, Some(&ac2), None, [2, 5, 1])
            .unwrap_err(),
        "bcast_affine with wrong coefficients must give the CPU's error"
    );
    cx.report();
}

/// `reduce` (sum, sum of squares, mean) over middle axes of many views, and the
/// `sum_all`-style defaults.
pub fn reduce<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "reduce");
    let mut views: Vec<[usize; 3]> = vec![
        [1, 1, 1],
        [3, 7, 1],
        [5, 3, 7],
        [2, 257, 33],
        [4, 1, 9],
        [1, 20_000, 1],
        [2, 0, 3],
        [1, 1000, 1152],
        [261, 5, 1],
        [3, 3000, 2],
    ];
    for _ in 0..3 {
        views.push([cx.gen.int(1, 6), cx.gen.int(1, 300), cx.gen.int(1, 70)]);
    }
    for dims in views {
        let n = dims[0] * dims[1] * dims[2];
        let (x, xc) = cx.rand(&[n], -1.0, 1.0);
        for op in [Reduce::Sum, Reduce::SumSq, Reduce::Mean] {
            // Summation order differs from the CPU's sequential loop.
            let tol = Tol::new(2e-6 * (dims[1] as f64).sqrt().max(1.0), 1e-5);
            cx.poison(dims[0] * dims[2]);
            let y = b.reduce(op, &x, dims).unwrap();
            let want = cx.cpu.reduce(op, &xc, dims).unwrap();
            cx.check(&format!("{op:?} {dims:?}"), &y, &want, tol);
        }
    }
    let (x, xc) = cx.rand(&[3, 1001], -1.0, 1.0);
    let tol = Tol::new(1e-4, 1e-5);
    cx.check(
        "sum_all",
        &b.sum_all(&x).unwrap(),
        &cx.cpu.sum_all(&xc).unwrap(),
        tol,
    );
    cx.check(
        "sum_sq_all",
        &b.sum_sq_all(&x).unwrap(),
        &cx.cpu.sum_sq_all(&xc).unwrap(),
        tol,
    );
    cx.check(
        "mean_all",
        &b.mean_all(&x).unwrap(),
        &cx.cpu.mean_all(&xc).unwrap(),
        tol,
    );
    let s = b.scalar(&b.sum_all(&x).unwrap()).unwrap();
    let sc = cx.cpu.scalar(&cx.cpu.sum_all(&xc).unwrap()).unwrap();
    assert!((s - sc).abs() < 1e-3, "scalar(sum_all): {s} vs {sc}");
    assert_eq!(
        b.reduce(Reduce::Sum, &x, [2, 2, 2]).unwrap_err(),
        cx.cpu.reduce(Reduce::Sum, &xc, [2, 2, 2]).unwrap_err()
    );
    cx.report();
}

/// `matmul` with every transpose combination, batches, a broadcast right operand, sizes
/// that are not multiples of the 64 × 64 × 16 tile, and an empty contraction.
pub fn matmul<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "matmul");
    // (batch dims of a, broadcast b?, m, k, n)
    let mut cases: Vec<(Vec<usize>, bool, usize, usize, usize)> = vec![
        (vec![], false, 1, 1, 1),
        (vec![], false, 3, 5, 7),
        (vec![], false, 64, 64, 64),
        (vec![], false, 65, 17, 63),
        (vec![2], false, 257, 33, 261),
        (vec![2, 3], true, 17, 16, 5),
        (vec![4], true, 1, 300, 1),
        (vec![1], false, 2, 0, 3),
        (vec![], false, 130, 1152, 3),
    ];
    for _ in 0..3 {
        let batch = vec![cx.gen.int(1, 3)];
        let bc = cx.gen.int(0, 1) == 1;
        cases.push((
            batch,
            bc,
            cx.gen.int(1, 140),
            cx.gen.int(1, 140),
            cx.gen.int(1, 140),
        ));
    }
    for (batch, bcast, m, k, n) in cases {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut ad = batch.clone();
            ad.extend(if ta { [k, m] } else { [m, k] });
            let mut bd = if bcast { vec![] } else { batch.clone() };
            bd.extend(if tb { [n, k] } else { [k, n] });
            let (a, ac) = cx.rand(&ad, -1.0, 1.0);
            let (bb, bc) = cx.rand(&bd, -1.0, 1.0);
            let total: usize = batch.iter().product::<usize>() * m * n;
            cx.poison(total);
            let y = b.matmul(&a, &bb, ta, tb).unwrap();
            let want = cx.cpu.matmul(&ac, &bc, ta, tb).unwrap();
            // f32 accumulation in another order: error grows like sqrt(k).
            let tol = Tol::new(1e-6 * (k.max(1) as f64).sqrt() * 4.0, 1e-5);
            cx.check(&format!("{ad:?}·{bd:?} ta={ta} tb={tb}"), &y, &want, tol);
        }
    }
    let (a, ac) = cx.rand(&[3, 4], 0.0, 1.0);
    let (bb, bc) = cx.rand(&[5, 6], 0.0, 1.0);
    assert_eq!(
        b.matmul(&a, &bb, false, false).unwrap_err(),
        cx.cpu.matmul(&ac, &bc, false, false).unwrap_err(),
        "a contraction mismatch must give the CPU's error"
    );
    cx.report();
}

/// `linear` and `linear_backward` (composite defaults over matmul).
pub fn linear<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "linear");
    let tol = Tol::new(5e-5, 1e-4);
    for (xd, out) in [
        (vec![2usize, 257, 33], 17usize),
        (vec![5, 8], 1),
        (vec![1, 261, 64], 96),
    ] {
        let inp = *xd.last().unwrap();
        let (x, xc) = cx.rand(&xd, -1.0, 1.0);
        let (w, wc) = cx.rand(&[out, inp], -0.5, 0.5);
        let (bias, biasc) = cx.rand(&[out], -0.5, 0.5);
        let y = b.linear(&x, &w, Some(&bias)).unwrap();
        let want = cx.cpu.linear(&xc, &wc, Some(&biasc)).unwrap();
        cx.check(&format!("forward {xd:?} → {out}"), &y, &want, tol);
        let mut yd = xd.clone();
        *yd.last_mut().unwrap() = out;
        let (dy, dyc) = cx.rand(&yd, -1.0, 1.0);
        let g = b.linear_backward(&x, &w, true, &dy).unwrap();
        let gc = cx.cpu.linear_backward(&xc, &wc, true, &dyc).unwrap();
        let rows = (xd.iter().product::<usize>() / inp) as f64;
        let tol_w = Tol::new(4e-6 * rows.sqrt(), 1e-4);
        cx.check(&format!("dx {xd:?}"), &g.dx, &gc.dx, tol);
        cx.check(&format!("dw {xd:?}"), &g.dw, &gc.dw, tol_w);
        cx.check(
            &format!("db {xd:?}"),
            g.db.as_ref().unwrap(),
            gc.db.as_ref().unwrap(),
            tol_w,
        );
    }
    cx.report();
}

/// LayerNorm and RMSNorm forward and backward, with and without affine parameters.
pub fn norms<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "layernorm/rmsnorm");
    let tol = Tol::new(2e-5, 1e-4);
    for dims in [
        &[1usize, 1][..],
        &[3, 5],
        &[257, 33],
        &[2, 261, 1152],
        &[4, 1024],
        &[2, 3, 7],
    ] {
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let c = *dims.last().unwrap();
        let n = rows * c;
        let (x, xc) = cx.rand(dims, -2.0, 3.0);
        let (g, gc) = cx.rand(&[c], 0.5, 1.5);
        let (be, bec) = cx.rand(&[c], -0.5, 0.5);
        let (dy, dyc) = cx.rand(dims, -1.0, 1.0);
        let tol_p = Tol::new(4e-6 * (rows as f64).sqrt() * 4.0, 1e-4);
        for (ug, ub) in [(true, true), (false, false), (true, false)] {
            let case = format!("{dims:?} gamma={ug} beta={ub}");
            cx.poison(n);
            cx.poison(rows);
            let (y, st) = b
                .layernorm(&x, ug.then_some(&g), ub.then_some(&be), 1e-6)
                .unwrap();
            let (yc, stc) = cx
                .cpu
                .layernorm(&xc, ug.then_some(&gc), ub.then_some(&bec), 1e-6)
                .unwrap();
            cx.check(&format!("layernorm {case}"), &y, &yc, tol);
            cx.check(&format!("layernorm mean {case}"), &st.mean, &stc.mean, tol);
            cx.check(&format!("layernorm rstd {case}"), &st.rstd, &stc.rstd, tol);
            cx.poison(n);
            let gr = b
                .layernorm_backward(&x, &st, ug.then_some(&g), ub, &dy)
                .unwrap();
            let grc = cx
                .cpu
                .layernorm_backward(&xc, &stc, ug.then_some(&gc), ub, &dyc)
                .unwrap();
            cx.check(&format!("layernorm dx {case}"), &gr.dx, &grc.dx, tol);
            assert_eq!(gr.dweight.is_some(), ug);
            assert_eq!(gr.dbias.is_some(), ub);
            if let (Some(d), Some(dc)) = (&gr.dweight, &grc.dweight) {
                cx.check(&format!("layernorm dgamma {case}"), d, dc, tol_p);
            }
            if let (Some(d), Some(dc)) = (&gr.dbias, &grc.dbias) {
                cx.check(&format!("layernorm dbeta {case}"), d, dc, tol_p);
            }
            if ub {
                continue;
            }
            cx.poison(n);
            let (y, st) = b.rmsnorm(&x, ug.then_some(&g), 1e-6).unwrap();
            let (yc, stc) = cx.cpu.rmsnorm(&xc, ug.then_some(&gc), 1e-6).unwrap();
            cx.check(&format!("rmsnorm {case}"), &y, &yc, tol);
            cx.check(
                &format!("rmsnorm mean {case}"),
                &st.mean,
                &stc.mean,
                Tol::EXACT,
            );
            cx.check(&format!("rmsnorm rstd {case}"), &st.rstd, &stc.rstd, tol);
            cx.poison(n);
            let gr = b.rmsnorm_backward(&x, &st, ug.then_some(&g), &dy).unwrap();
            let grc = cx
                .cpu
                .rmsnorm_backward(&xc, &stc, ug.then_some(&gc), &dyc)
                .unwrap();
            cx.check(&format!("rmsnorm dx {case}"), &gr.dx, &grc.dx, tol);
            assert_eq!(gr.dweight.is_some(), ug);
            if let (Some(d), Some(dc)) = (&gr.dweight, &grc.dweight) {
                cx.check(&format!("rmsnorm dweight {case}"), d, dc, tol_p);
            }
        }
    }
    cx.report();
}

/// Softmax forward and backward, including rows with large offsets.
pub fn softmax<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "softmax");
    let tol = Tol::new(1e-6, 1e-5);
    for (dims, lo, hi) in [
        (&[1usize, 1][..], -1.0f32, 1.0f32),
        (&[3, 7], -5.0, 5.0),
        (&[2, 261, 261], -5.0, 5.0),
        (&[5, 1024], -8.0, 8.0),
        (&[4, 33], 80.0, 120.0),
        (&[2, 257], -120.0, -80.0),
    ] {
        let n: usize = dims.iter().product();
        let (x, xc) = cx.rand(dims, lo, hi);
        cx.poison(n);
        let y = b.softmax(&x).unwrap();
        let yc = cx.cpu.softmax(&xc).unwrap();
        cx.check(&format!("forward {dims:?} in [{lo}, {hi})"), &y, &yc, tol);
        let (dy, dyc) = cx.rand(dims, -1.0, 1.0);
        cx.poison(n);
        let dx = b.softmax_backward(&y, &dy).unwrap();
        let dxc = cx.cpu.softmax_backward(&yc, &dyc).unwrap();
        cx.check(&format!("backward {dims:?}"), &dx, &dxc, tol);
    }
    cx.report();
}

/// `attention` and `attention_backward` on `[B, H, N, hd]` (257 and 261 tokens).
pub fn attention<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "attention");
    let tol = Tol::new(5e-5, 1e-4);
    for dims in [
        &[1usize, 2, 257, 16][..],
        &[2, 1, 5, 8],
        &[1, 1, 261, 64],
        &[3, 1, 1, 4],
    ] {
        let hd = dims[3];
        let scale = 1.0 / (hd as f32).sqrt();
        let (q, qc) = cx.rand(dims, -1.5, 1.5);
        let (k, kc) = cx.rand(dims, -1.5, 1.5);
        let (v, vc) = cx.rand(dims, -1.0, 1.0);
        let (o, p) = b.attention(&q, &k, &v, scale).unwrap();
        let (oc, pc) = cx.cpu.attention(&qc, &kc, &vc, scale).unwrap();
        cx.check(&format!("out {dims:?}"), &o, &oc, tol);
        cx.check(&format!("probabilities {dims:?}"), &p, &pc, tol);
        let (dout, doutc) = cx.rand(dims, -1.0, 1.0);
        let g = b.attention_backward(&q, &k, &v, &p, &dout, scale).unwrap();
        let gc = cx
            .cpu
            .attention_backward(&qc, &kc, &vc, &pc, &doutc, scale)
            .unwrap();
        cx.check(&format!("dq {dims:?}"), &g.dq, &gc.dq, tol);
        cx.check(&format!("dk {dims:?}"), &g.dk, &gc.dk, tol);
        cx.check(&format!("dv {dims:?}"), &g.dv, &gc.dv, tol);
    }
    cx.report();
}

/// RoPE forward and inverse (its backward).
pub fn rope<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "rope");
    let tol = Tol::new(1e-6, 1e-6);
    for dims in [&[2usize, 3, 257, 16][..], &[1, 2], &[5, 6], &[2, 261, 64]] {
        let r = dims.len();
        let (n, hd) = (dims[r - 2], dims[r - 1]);
        let numel: usize = dims.iter().product();
        let (x, xc) = cx.rand(dims, -1.0, 1.0);
        let (c, cc) = cx.rand(&[n, hd], -1.0, 1.0);
        let (s, sc) = cx.rand(&[n, hd], -1.0, 1.0);
        for inverse in [false, true] {
            cx.poison(numel);
            let y = b.rope(&x, &c, &s, inverse).unwrap();
            let want = cx.cpu.rope(&xc, &cc, &sc, inverse).unwrap();
            cx.check(&format!("{dims:?} inverse={inverse}"), &y, &want, tol);
        }
    }
    let (x, xc) = cx.rand(&[2, 3, 5], 0.0, 1.0);
    let (c, cc) = cx.rand(&[3, 5], 0.0, 1.0);
    assert_eq!(
        b.rope(&x, &c, &c, false).unwrap_err(),
        cx.cpu.rope(&xc, &cc, &cc, false).unwrap_err(),
        "odd head size must give the CPU's error"
    );
    cx.report();
}

/// SwiGLU forward and backward.
pub fn swiglu<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "swiglu");
    let tol = Tol::new(2e-6, 1e-5);
    for dims in [
        &[257usize, 12][..],
        &[3, 16],
        &[2, 5, 66],
        &[1, 2],
        &[261, 2048],
    ] {
        let n: usize = dims.iter().product();
        let h = dims[dims.len() - 1] / 2;
        let (u, uc) = cx.rand(dims, -4.0, 4.0);
        cx.poison(n / 2);
        let y = b.swiglu(&u).unwrap();
        cx.check(
            &format!("forward {dims:?}"),
            &y,
            &cx.cpu.swiglu(&uc).unwrap(),
            tol,
        );
        let mut yd = dims.to_vec();
        *yd.last_mut().unwrap() = h;
        let (dy, dyc) = cx.rand(&yd, -1.0, 1.0);
        cx.poison(n);
        let du = b.swiglu_backward(&u, &dy).unwrap();
        let want = cx.cpu.swiglu_backward(&uc, &dyc).unwrap();
        cx.check(&format!("backward {dims:?}"), &du, &want, tol);
    }
    cx.report();
}

/// adaLN `modulate` and `gate`, per-sample, per-token and grouped conditioning, with
/// either modulation term absent; forward and backward.
pub fn modulate_gate<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "modulate/gate");
    let tol = Tol::new(2e-6, 1e-5);
    for (bsz, n, nc, c) in [
        (2usize, 257usize, 1usize, 12usize),
        (2, 257, 257, 12),
        (3, 8, 2, 5),
        (1, 261, 3, 64),
        (2, 1, 1, 7),
    ] {
        let xd = [bsz, n, c];
        let cd = [bsz, nc, c];
        let (x, xc) = cx.rand(&xd, -2.0, 2.0);
        let (sh, shc) = cx.rand(&cd, -1.0, 1.0);
        let (sc, scc) = cx.rand(&cd, -1.0, 1.0);
        let (dy, dyc) = cx.rand(&xd, -1.0, 1.0);
        let tol_r = Tol::new(4e-6 * ((n / nc) as f64).sqrt() * 4.0, 1e-4);
        for (us, uc) in [(true, true), (true, false), (false, true), (false, false)] {
            let case = format!("x {xd:?} cond {cd:?} shift={us} scale={uc}");
            cx.poison(x.numel());
            let y = b
                .modulate(&x, us.then_some(&sh), uc.then_some(&sc))
                .unwrap();
            let want = cx
                .cpu
                .modulate(&xc, us.then_some(&shc), uc.then_some(&scc))
                .unwrap();
            cx.check(&format!("modulate {case}"), &y, &want, tol);
            cx.poison(x.numel());
            cx.poison(sh.numel());
            let g = b
                .modulate_backward(&x, us.then_some(&sh), uc.then_some(&sc), &dy)
                .unwrap();
            let gc = cx
                .cpu
                .modulate_backward(&xc, us.then_some(&shc), uc.then_some(&scc), &dyc)
                .unwrap();
            cx.check(&format!("modulate dx {case}"), &g.dx, &gc.dx, tol);
            assert_eq!(g.dshift.is_some(), us);
            assert_eq!(g.dscale.is_some(), uc);
            if let (Some(d), Some(dc)) = (&g.dshift, &gc.dshift) {
                cx.check(&format!("modulate dshift {case}"), d, dc, tol_r);
            }
            if let (Some(d), Some(dc)) = (&g.dscale, &gc.dscale) {
                cx.check(&format!("modulate dscale {case}"), d, dc, tol_r);
            }
        }
        let case = format!("x {xd:?} g {cd:?}");
        cx.poison(x.numel());
        let y = b.gate(&x, &sc).unwrap();
        cx.check(
            &format!("gate {case}"),
            &y,
            &cx.cpu.gate(&xc, &scc).unwrap(),
            tol,
        );
        cx.poison(x.numel());
        cx.poison(sc.numel());
        let (dx, dg) = b.gate_backward(&x, &sc, &dy).unwrap();
        let (dxc, dgc) = cx.cpu.gate_backward(&xc, &scc, &dyc).unwrap();
        cx.check(&format!("gate dx {case}"), &dx, &dxc, tol);
        cx.check(&format!("gate dg {case}"), &dg, &dgc, tol_r);
    }
    let (x, xc) = cx.rand(&[2, 6, 4], 0.0, 1.0);
    let (g, gc) = cx.rand(&[2, 4, 4], 0.0, 1.0);
    assert_eq!(
        b.gate(&x, &g).unwrap_err(),
        cx.cpu.gate(&xc, &gc).unwrap_err(),
        "a conditioning count that does not divide N must give the CPU's error"
    );
    cx.report();
}

/// `gather_rows` and `scatter_add_rows` (repeated, unused and out-of-range indices).
pub fn embedding<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "gather/scatter");
    for (v, c, len) in [
        (11usize, 7usize, 257usize),
        (1001, 64, 261),
        (3, 1, 5),
        (5, 4, 0),
    ] {
        let (t, tc) = cx.rand(&[v, c], -1.0, 1.0);
        let idx: Vec<u32> = (0..len).map(|_| cx.gen.int(0, v - 1) as u32).collect();
        cx.poison(len * c);
        let y = b.gather_rows(&t, &idx).unwrap();
        let want = cx.cpu.gather_rows(&tc, &idx).unwrap();
        cx.check(&format!("gather [{v}, {c}] × {len}"), &y, &want, Tol::EXACT);
        let (dy, dyc) = cx.rand(&[len, c], -1.0, 1.0);
        let rows = v + 2; // two rows no index points at must come back as zeros
        cx.poison(rows * c);
        let s = b.scatter_add_rows(&dy, &idx, rows).unwrap();
        let want = cx.cpu.scatter_add_rows(&dyc, &idx, rows).unwrap();
        // Same summation order as the CPU: bit-identical.
        cx.check(
            &format!("scatter [{len}, {c}] → {rows}"),
            &s,
            &want,
            Tol::EXACT,
        );
    }
    let (t, tc) = cx.rand(&[4, 3], 0.0, 1.0);
    assert_eq!(
        b.gather_rows(&t, &[1, 4]).unwrap_err(),
        cx.cpu.gather_rows(&tc, &[1, 4]).unwrap_err(),
        "an index outside the table must give the CPU's error"
    );
    cx.report();
}

/// Gaussian Fourier time features.
pub fn fourier<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "fourier_features");
    // sin/cos of phases up to ~30 rad: device and libm differ by a few ulp of the phase.
    let tol = Tol::new(1e-5, 0.0);
    for (bsz, f) in [(5usize, 16usize), (257, 3), (1, 1), (4, 128)] {
        let (t, tc) = cx.rand(&[bsz], 0.0, 1.0);
        let (w, wc) = cx.rand(&[f], -5.0, 5.0);
        cx.poison(bsz * 2 * f);
        let y = b.fourier_features(&t, &w).unwrap();
        let want = cx.cpu.fourier_features(&tc, &wc).unwrap();
        cx.check(&format!("B={bsz} F={f}"), &y, &want, tol);
    }
    cx.report();
}

/// Patchify / unpatchify in both patch orders, permute0213, slice_mid and concat_mid.
pub fn layout<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "layout");
    for (dims, p) in [
        ([2usize, 3, 8, 8], 2usize),
        ([1, 5, 6, 9], 3),
        ([2, 4, 16, 16], 1),
        ([1, 768, 16, 16], 16),
    ] {
        let n: usize = dims.iter().product();
        let (x, xc) = cx.rand(&dims, -1.0, 1.0);
        for order in [PatchOrder::ChannelFirst, PatchOrder::ChannelLast] {
            cx.poison(n);
            let t = b.patchify(&x, p, order).unwrap();
            let tc = cx.cpu.patchify(&xc, p, order).unwrap();
            cx.check(
                &format!("patchify {dims:?} p={p} {order:?}"),
                &t,
                &tc,
                Tol::EXACT,
            );
            let grid = (dims[2] / p, dims[3] / p);
            cx.poison(n);
            let back = b.unpatchify(&t, dims[1], grid, p, order).unwrap();
            let backc = cx.cpu.unpatchify(&tc, dims[1], grid, p, order).unwrap();
            cx.check(
                &format!("unpatchify {dims:?} p={p} {order:?}"),
                &back,
                &backc,
                Tol::EXACT,
            );
        }
    }
    for dims in [
        [2usize, 257, 3, 16],
        [1, 5, 7, 1],
        [3, 2, 4, 5],
        [2, 261, 4, 64],
    ] {
        let n: usize = dims.iter().product();
        let (x, xc) = cx.rand(&dims, -1.0, 1.0);
        cx.poison(n);
        let y = b.permute0213(&x).unwrap();
        cx.check(
            &format!("permute0213 {dims:?}"),
            &y,
            &cx.cpu.permute0213(&xc).unwrap(),
            Tol::EXACT,
        );
    }
    for (dims, start, len) in [
        ([2usize, 257, 12], 1usize, 256usize),
        ([5, 3, 8], 2, 1),
        ([3, 7, 5], 0, 7),
        ([1, 261, 1], 4, 257),
        ([2, 4, 3], 1, 0),
    ] {
        let n = dims[0] * dims[1] * dims[2];
        let (x, xc) = cx.rand(&[n], -1.0, 1.0);
        cx.poison(dims[0] * len * dims[2]);
        let y = b.slice_mid(&x, dims, start, len).unwrap();
        let want = cx.cpu.slice_mid(&xc, dims, start, len).unwrap();
        cx.check(
            &format!("slice_mid {dims:?} {start}+{len}"),
            &y,
            &want,
            Tol::EXACT,
        );
    }
    for (outer, inner, mids) in [
        (2usize, 12usize, vec![1usize, 256]),
        (3, 5, vec![2, 0, 7]),
        (1, 1, vec![257, 4]),
        (4, 64, vec![3, 1, 2]),
    ] {
        let parts: Vec<Pair<B>> = mids
            .iter()
            .map(|&m| cx.rand(&[outer, m, inner], -1.0, 1.0))
            .collect();
        let total: usize = mids.iter().sum();
        cx.poison(outer * total * inner);
        let xs: Vec<&Tensor<B>> = parts.iter().map(|p| &p.0).collect();
        let xcs: Vec<&Tensor<CpuBackend>> = parts.iter().map(|p| &p.1).collect();
        let y = b.concat_mid(&xs, outer, inner).unwrap();
        let want = cx.cpu.concat_mid(&xcs, outer, inner).unwrap();
        cx.check(
            &format!("concat_mid {outer}×{mids:?}×{inner}"),
            &y,
            &want,
            Tol::EXACT,
        );
    }
    let (x, xc) = cx.rand(&[2, 5, 3], 0.0, 1.0);
    assert_eq!(
        b.slice_mid(&x, [2, 5, 3], 3, 3).unwrap_err(),
        cx.cpu.slice_mid(&xc, [2, 5, 3], 3, 3).unwrap_err(),
        "a slice past the axis must give the CPU's error"
    );
    cx.report();
}

/// AdamW steps and EMA updates; a clone taken before an update must keep its values.
pub fn optimiser<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "adamw/ema");
    // Same operation order as the CPU; only sqrt/division rounding may differ.
    let tol = Tol::new(1e-7, 1e-6);
    for dims in [&[257usize, 3][..], &[4096], &[1], &[2, 261, 5]] {
        let n: usize = dims.iter().product();
        let (mut p, mut pc) = cx.rand(dims, -1.0, 1.0);
        let (mut m, mut mc) = cx.rand(dims, -0.1, 0.1);
        let (mut v, mut vc) = cx.rand(dims, 0.0, 0.01);
        let p_before = p.clone();
        let p_before_host = b.download(&p).unwrap();
        for step in [1u64, 2, 10] {
            let (g, gc) = cx.rand(dims, -1.0, 1.0);
            let hp = AdamWStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.05,
                step,
                grad_scale: 0.7,
            };
            cx.poison(n);
            b.adamw_step(&mut p, &g, &mut m, &mut v, &hp).unwrap();
            cx.cpu
                .adamw_step(&mut pc, &gc, &mut mc, &mut vc, &hp)
                .unwrap();
            cx.check(&format!("adamw param {dims:?} step {step}"), &p, &pc, tol);
            cx.check(&format!("adamw m {dims:?} step {step}"), &m, &mc, tol);
            cx.check(&format!("adamw v {dims:?} step {step}"), &v, &vc, tol);
        }
        assert_eq!(
            b.download(&p_before).unwrap(),
            p_before_host,
            "adamw_step changed a clone of the parameter taken before the step"
        );
        let (mut e, mut ec) = cx.rand(dims, -1.0, 1.0);
        let e_copy = e.clone();
        let e_host = b.download(&e).unwrap();
        for decay in [0.9999f32, 0.5, 0.0] {
            cx.poison(n);
            b.ema_update(&mut e, &p, decay).unwrap();
            cx.cpu.ema_update(&mut ec, &pc, decay).unwrap();
            cx.check(&format!("ema {dims:?} decay {decay}"), &e, &ec, tol);
        }
        assert_eq!(
            b.download(&e_copy).unwrap(),
            e_host,
            "ema_update changed a clone of the EMA taken before the update"
        );
    }
    cx.report();
}

/// Philox uniform and normal fills: bit-identical to the CPU for several keys and offsets
/// (most not multiples of 4), including 64-bit seeds, streams and offsets.
pub fn philox<B: Backend>(b: &B) {
    let cx = Ctx::new(b, "philox");
    let keys = [
        PhiloxKey::new(0, 0),
        PhiloxKey::new(7, 3),
        PhiloxKey::new(0x1234_5678_9abc_def0, 0xffff_ffff_0000_0001),
    ];
    let offsets = [0u64, 1, 2, 3, 5, 7, 4099, (1 << 32) + 1, (1 << 34) - 3];
    for key in keys {
        for offset in offsets {
            for dims in [&[1usize][..], &[5], &[1027], &[3, 261]] {
                let n: usize = dims.iter().product();
                let case = format!("{key:?} offset {offset} {dims:?}");
                cx.poison(n);
                let u = b.fill_uniform(dims, key, offset).unwrap();
                let uc = cx.cpu.fill_uniform(dims, key, offset).unwrap();
                cx.check(&format!("uniform {case}"), &u, &uc, Tol::EXACT);
                cx.poison(n);
                let z = b.fill_normal(dims, key, offset).unwrap();
                let zc = cx.cpu.fill_normal(dims, key, offset).unwrap();
                cx.check(&format!("normal {case}"), &z, &zc, Tol::EXACT);
            }
        }
    }
    // A long fill crosses many blocks and grid rows.
    let key = PhiloxKey::new(42, 9);
    let z = b.fill_normal(&[70_001], key, 3).unwrap();
    let zc = cx.cpu.fill_normal(&[70_001], key, 3).unwrap();
    cx.check("normal long", &z, &zc, Tol::EXACT);
    cx.report();
}

/// Prints `SKIPPED: <why>` once per test binary and reason, straight to the process's stderr:
/// the test harness captures `eprintln!` of passing tests, which would hide the skip.
pub fn report_skip(why: &str) {
    use std::io::Write;
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.iter().any(|s| s == why) {
        seen.push(why.to_string());
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
    }
}

/// The WGPU backend for a test, chosen by `RAE_WGPU_ADAPTER` (a GPU first, else lavapipe),
/// created once per test binary. `None` (after printing `SKIPPED: wgpu backend not
/// present: <why>`) when there is no adapter; with `RAE_REQUIRE_WGPU=1` a missing adapter
/// panics instead, so CI cannot skip silently.
pub fn wgpu_or_skip() -> Option<&'static WgpuBackend> {
    static B: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    let b = B.get_or_init(|| {
        WgpuOptions::from_env()
            .and_then(|o| o.build())
            .map_err(|e| e.to_string())
    });
    match b {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("RAE_REQUIRE_WGPU").as_deref() == Ok("1") {
                panic!("RAE_REQUIRE_WGPU=1 but the wgpu backend is not available: {e}");
            }
            report_skip(&format!("wgpu backend not present: {e}"));
            None
        }
    }
}

/// The CUDA backend on device 0 for a test, created once per test binary; `None` (after
/// printing `SKIPPED: cuda backend not present: <why>`) without a driver or device.
pub fn cuda_or_skip() -> Option<&'static CudaBackend> {
    static B: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    match B.get_or_init(|| rae_backend_cuda::create(0).map_err(|e| e.to_string())) {
        Ok(b) => Some(b),
        Err(e) => {
            report_skip(&format!("cuda backend not present: {e}"));
            None
        }
    }
}

/// Runs every op test of the suite on `b` (in one thread; the test binary instantiates
/// them one `#[test]` each instead).
pub fn run_all<B: Backend>(b: &B) {
    memory(b);
    unary(b);
    binary(b);
    bcast_affine(b);
    reduce(b);
    matmul(b);
    linear(b);
    norms(b);
    softmax(b);
    attention(b);
    rope(b);
    swiglu(b);
    modulate_gate(b);
    embedding(b);
    fourier(b);
    layout(b);
    optimiser(b);
    philox(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "element 1 of 3")]
    fn check_rejects_a_value_out_of_tolerance() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals(
            "case",
            &[1.0, 2.5, 3.0],
            &[1.0, 2.0, 3.0],
            Tol::new(0.1, 0.1),
        );
    }

    #[test]
    #[should_panic(expected = "got NaN")]
    fn check_rejects_nan_even_with_a_huge_tolerance() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals("case", &[f32::NAN], &[1.0], Tol::new(1e30, 1e30));
    }

    #[test]
    fn exact_tolerance_compares_bits() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals("case", &[1.0, -0.0], &[1.0, -0.0], Tol::EXACT);
        let r = std::panic::catch_unwind(|| {
            cx.check_vals("case", &[0.0], &[-0.0], Tol::EXACT);
        });
        assert!(r.is_err(), "+0 and −0 differ bit-wise");
    }

    #[test]
    fn gen_is_reproducible_and_in_range() {
        let mut a = Gen::new(3);
        let mut b = Gen::new(3);
        let va = a.vec(100, -2.0, 5.0);
        assert_eq!(va, b.vec(100, -2.0, 5.0));
        assert!(va.iter().all(|&x| (-2.0..5.0).contains(&x)));
        for _ in 0..100 {
            let k = a.int(3, 9);
            assert!((3..=9).contains(&k));
        }
    }
}
