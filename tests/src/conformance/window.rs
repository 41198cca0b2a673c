//! Conformance of the 2-D window ops (im2col, col2im, pool2d and its backward) against a
//! plain f64 reference written here (not the CPU backend): non-square inputs, strides 2
//! and 3, paddings (0, 3), (3, 0) and 1, windows 1×1, 3×3, 1×7, 7×1, a window taller than
//! the input, max and both averages, tied maxima, and shapes drawn from the seeded stream.
//! col2im is also checked as the adjoint of im2col: `⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩`.

// Test code: a failing op or upload is a test failure, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::harness::{Ctx, Tol};
use rae_core::backend::{Backend, Pool2d, Window2d};

/// `(n, c, h, w, kh, kw, sh, sw, ph, pw)`.
type Geo = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const FIXED: &[Geo] = &[
    (2, 3, 7, 5, 3, 3, 1, 1, 1, 1),
    (1, 2, 9, 6, 3, 3, 2, 2, 0, 0),
    (2, 3, 5, 8, 1, 7, 1, 1, 0, 3),
    (1, 4, 8, 5, 7, 1, 1, 1, 3, 0),
    (2, 5, 4, 6, 1, 1, 1, 1, 0, 0),
    (1, 2, 3, 4, 5, 3, 2, 1, 2, 1),
    (3, 1, 6, 7, 2, 3, 2, 3, 1, 0),
    (2, 3, 35, 35, 3, 3, 2, 2, 0, 0),
    (1, 2, 1, 1, 1, 1, 1, 1, 0, 0),
    (1, 3, 17, 13, 3, 3, 1, 1, 1, 1),
];

fn win((n, c, h, w, kh, kw, sh, sw, ph, pw): Geo) -> Window2d {
    Window2d {
        n,
        c,
        h,
        w,
        kh,
        kw,
        sh,
        sw,
        ph,
        pw,
    }
}

/// The input value under padded coordinates `(yp, xp)` of plane `p`, `None` in the padding.
fn at(x: &[f32], g: &Window2d, p: usize, yp: usize, xp: usize) -> Option<(usize, f64)> {
    let (y, xx) = (yp.checked_sub(g.ph)?, xp.checked_sub(g.pw)?);
    (y < g.h && xx < g.w).then(|| {
        let i = (p * g.h + y) * g.w + xx;
        (i, x[i] as f64)
    })
}

fn ref_im2col(x: &[f32], g: &Window2d) -> Vec<f64> {
    let (ho, wo) = g.out_hw();
    let mut out = Vec::new();
    for bi in 0..g.n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ci in 0..g.c {
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let v = at(x, g, bi * g.c + ci, oy * g.sh + i, ox * g.sw + j);
                            out.push(v.map_or(0.0, |v| v.1));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The scatter-add formulation (the kernels gather).
fn ref_col2im(cols: &[f32], g: &Window2d) -> Vec<f64> {
    let (ho, wo) = g.out_hw();
    let zeros = vec![0.0f32; g.n * g.c * g.h * g.w];
    let mut out = vec![0.0f64; zeros.len()];
    let mut q = 0;
    for bi in 0..g.n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ci in 0..g.c {
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            if let Some((idx, _)) =
                                at(&zeros, g, bi * g.c + ci, oy * g.sh + i, ox * g.sw + j)
                            {
                                out[idx] += cols[q] as f64;
                            }
                            q += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

/// Pooling forward and, with `dy`, the gradient (first maximum in row-major order).
fn ref_pool(x: &[f32], dy: Option<&[f32]>, g: &Window2d, kind: Pool2d) -> Vec<f64> {
    let (ho, wo) = g.out_hw();
    let mut y = Vec::new();
    let mut dx = vec![0.0f64; x.len()];
    for p in 0..g.n * g.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut inside = Vec::new();
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        inside.extend(at(x, g, p, oy * g.sh + i, ox * g.sw + j));
                    }
                }
                let d = dy.map_or(0.0, |d| d[(p * ho + oy) * wo + ox] as f64);
                match kind {
                    Pool2d::Max => {
                        let mut best = inside[0];
                        for &(i, v) in &inside {
                            if v > best.1 {
                                best = (i, v);
                            }
                        }
                        y.push(best.1);
                        dx[best.0] += d;
                    }
                    Pool2d::Avg { count_pad } => {
                        let div = if count_pad {
                            (g.kh * g.kw) as f64
                        } else {
                            inside.len() as f64
                        };
                        y.push(inside.iter().map(|v| v.1).sum::<f64>() / div);
                        for &(i, _) in &inside {
                            dx[i] += d / div;
                        }
                    }
                }
            }
        }
    }
    if dy.is_some() {
        dx
    } else {
        y
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// im2col, col2im (and their adjointness), pool2d and pool2d_backward.
pub fn window2d<B: Backend>(b: &B) {
    let mut cx = Ctx::new(b, "im2col/col2im/pool2d");
    let mut geos: Vec<Geo> = FIXED.to_vec();
    for _ in 0..6 {
        let (kh, kw) = (cx.gen.int(1, 4), cx.gen.int(1, 4));
        let (ph, pw) = (cx.gen.int(0, kh / 2), cx.gen.int(0, kw / 2));
        let (h, w) = (cx.gen.int(kh, kh + 9), cx.gen.int(kw, kw + 9));
        let (sh, sw) = (cx.gen.int(1, 3), cx.gen.int(1, 3));
        geos.push((
            cx.gen.int(1, 3),
            cx.gen.int(1, 4),
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
        ));
    }
    let pool_tol = Tol::new(1e-6, 1e-5);
    for geo in geos {
        let g = win(geo);
        let case = format!("{g:?}");
        let xd = g.input_dims();
        let nx: usize = xd.iter().product();
        let (x, _) = cx.rand(&xd, -2.0, 2.0);
        let xh = b.download(&x).unwrap();
        // im2col: a copy, exact.
        let cd = g.cols_dims();
        let nc: usize = cd.iter().product();
        cx.poison(nc);
        let cols = b.im2col(&x, g).unwrap();
        assert_eq!(cols.dims(), &cd, "{case}");
        let got = b.download(&cols).unwrap();
        cx.check_vals(
            &format!("im2col {case}"),
            &got,
            &f32s(&ref_im2col(&xh, &g)),
            Tol::EXACT,
        );
        // col2im: sums of a few products.
        let (y, _) = cx.rand(&cd, -1.0, 1.0);
        let yh = b.download(&y).unwrap();
        cx.poison(nx);
        let back = b.col2im(&y, g).unwrap();
        assert_eq!(back.dims(), &xd, "{case}");
        let backh = b.download(&back).unwrap();
        let want = ref_col2im(&yh, &g);
        cx.check_vals(&format!("col2im {case}"), &backh, &f32s(&want), pool_tol);
        let (l, r) = (dot(&got, &yh), dot(&xh, &backh));
        assert!(
            (l - r).abs() <= 1e-5 * (1.0 + l.abs()),
            "{} col2im is not the adjoint of im2col: {case}: {l} vs {r}",
            b.name()
        );
        // Pooling, on the data and on small integers (tied maxima).
        let ties: Vec<f32> = (0..nx).map(|i| ((i * 7 + i / 3) % 4) as f32).collect();
        let (xt, _) = cx.pair_from(&ties, &xd);
        for (xs, xv) in [(&x, &xh), (&xt, &ties)] {
            for kind in [
                Pool2d::Max,
                Pool2d::Avg { count_pad: true },
                Pool2d::Avg { count_pad: false },
            ] {
                let case = format!("{kind:?} {case}");
                let pd = g.pooled_dims();
                let np: usize = pd.iter().product();
                cx.poison(np);
                let p = b.pool2d(xs, g, kind).unwrap();
                assert_eq!(p.dims(), &pd, "{case}");
                let want = f32s(&ref_pool(xv, None, &g, kind));
                let tol = if kind == Pool2d::Max {
                    Tol::EXACT
                } else {
                    pool_tol
                };
                cx.check_vals(
                    &format!("pool2d {case}"),
                    &b.download(&p).unwrap(),
                    &want,
                    tol,
                );
                let (dy, _) = cx.rand(&pd, -1.0, 1.0);
                let dyh = b.download(&dy).unwrap();
                cx.poison(nx);
                let dx = b.pool2d_backward(xs, &dy, g, kind).unwrap();
                assert_eq!(dx.dims(), &xd, "{case}");
                let want = f32s(&ref_pool(xv, Some(&dyh), &g, kind));
                let got = b.download(&dx).unwrap();
                cx.check_vals(&format!("pool2d_backward {case}"), &got, &want, pool_tol);
            }
        }
    }
    // Bad geometry: the same error text as the CPU's.
    let g = win((1, 2, 4, 4, 3, 3, 1, 1, 2, 2));
    let (x, xc) = cx.rand(&g.input_dims(), 0.0, 1.0);
    let e = b.pool2d(&x, g, Pool2d::Max).unwrap_err().to_string();
    let ec = cx.cpu.pool2d(&xc, g, Pool2d::Max).unwrap_err().to_string();
    assert_eq!(e, ec);
    assert!(e.contains("more than half"), "{e}");
    let bad = win((1, 3, 4, 4, 3, 3, 1, 1, 1, 1));
    let e = b.im2col(&x, bad).unwrap_err().to_string();
    assert_eq!(e, cx.cpu.im2col(&xc, bad).unwrap_err().to_string());
    assert!(e.contains("im2col"), "{e}");
    cx.report();
}
