//! Conformance of the layer ops: norms, softmax, attention, RoPE, SwiGLU, adaLN,
//! embeddings, Fourier features, layout copies, the optimiser and Philox fills.

// Test code: a failing op or upload is a test failure, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::harness::{Ctx, Pair, Tol};
use rae_core::backend::{AdamWStep, Backend, PatchOrder};
use rae_core::{CpuBackend, PhiloxKey, Tensor};

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
