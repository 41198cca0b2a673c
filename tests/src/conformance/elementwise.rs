//! Conformance of memory, element-wise, broadcast, reduction, matmul and linear ops.

// Test code: a failing op or upload is a test failure, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::harness::{Ctx, Tol, ELEMENTWISE_DIMS};
use rae_core::backend::{Backend, Binary, Reduce, Unary};

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
        Unary::Relu,
        Unary::LeakyRelu,
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
    // Large arguments: tanh and exp must not overflow into NaN; exact zeros for Abs' and
    // Relu' (0 at ±0, PyTorch's subgradients).
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
    // ReLU exactly, signed zeros included; its backward selects `dy`, so an infinite `dy`
    // where x ≤ 0 gives 0 (PyTorch's `threshold_backward`), not inf·0 = NaN.
    let (x, xc) = cx.pair_from(&[-1.0, 0.0, -0.0, 2.0, 1e-30, -1e-30], &[6]);
    let inf = f32::INFINITY;
    let (dy, dyc) = cx.pair_from(&[inf, inf, -inf, 3.0, -inf, inf], &[6]);
    let y = b.unary(Unary::Relu, &x).unwrap();
    let want = cx.cpu.unary(Unary::Relu, &xc).unwrap();
    cx.check("Relu exact", &y, &want, Tol::EXACT);
    let dx = b.unary_backward(Unary::Relu, &x, &dy).unwrap();
    let want = cx.cpu.unary_backward(Unary::Relu, &xc, &dyc).unwrap();
    cx.check("Relu backward, infinite dy", &dx, &want, Tol::EXACT);
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
