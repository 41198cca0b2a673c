//! `Conv2d` on the CPU against a direct f64 convolution (forward, `dx`, `dweight`,
//! `dbias`), on awkward geometries: non-square inputs, strides 2, paddings (0, 3) and
//! (3, 0), 1×1, 3×3, 7×1 and 1×7 windows, a window taller than the input; plus the shape
//! errors. Run with `--nocapture` for one rough GFLOP/s figure of an Inception-sized layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::nn::{Conv2d, Grads, Init, Module};
use rae_core::{Backend, CpuBackend};

mod common;
use common::{down, up, Gen};

const BE: CpuBackend = CpuBackend::new();

/// One case: input `[n, c, h, w]`, weight `[o, c, kh, kw]`, stride, padding.
type Case = ([usize; 4], [usize; 4], (usize, usize), (usize, usize));

/// `x[n, c, y, x]`, zero outside.
fn at(x: &[f32], [_, c, h, w]: [usize; 4], bi: usize, ci: usize, y: isize, xx: isize) -> f64 {
    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
        return 0.0;
    }
    x[((bi * c + ci) * h + y as usize) * w + xx as usize] as f64
}

/// `(y, dx, dw, db)` of the direct convolution in f64 with cotangent `gy`.
#[allow(clippy::type_complexity)]
fn direct(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    gy: &[f32],
    (xd, [o, c, kh, kw], (sh, sw), (ph, pw)): Case,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, _, h, w] = xd;
    let ho = (h + 2 * ph - kh) / sh + 1;
    let wo = (w + 2 * pw - kw) / sw + 1;
    let mut y = vec![0.0; n * o * ho * wo];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; wt.len()];
    let mut db = vec![0.0; o];
    for bi in 0..n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let q = ((bi * o + oc) * ho + oy) * wo + ox;
                    let g = gy[q] as f64;
                    let mut s = bias.get(oc).map_or(0.0, |&b| b as f64);
                    db[oc] += g;
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let yy = (oy * sh + i) as isize - ph as isize;
                                let xx = (ox * sw + j) as isize - pw as isize;
                                let wi = ((oc * c + ci) * kh + i) * kw + j;
                                let v = at(x, xd, bi, ci, yy, xx);
                                s += wt[wi] as f64 * v;
                                dw[wi] += g * v;
                                let inside =
                                    (0..h as isize).contains(&yy) && (0..w as isize).contains(&xx);
                                if inside {
                                    let xi = ((bi * c + ci) * h + yy as usize) * w + xx as usize;
                                    dx[xi] += g * wt[wi] as f64;
                                }
                            }
                        }
                    }
                    y[q] = s;
                }
            }
        }
    }
    (y, dx, dw, db)
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * scale,
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn conv2d_matches_a_direct_convolution() {
    let cases: &[Case] = &[
        ([2, 3, 7, 5], [4, 3, 3, 3], (1, 1), (1, 1)),
        ([1, 2, 9, 6], [3, 2, 3, 3], (2, 2), (0, 0)),
        ([2, 3, 5, 8], [2, 3, 1, 7], (1, 1), (0, 3)),
        ([1, 4, 8, 5], [3, 4, 7, 1], (1, 2), (3, 0)),
        ([2, 5, 4, 6], [6, 5, 1, 1], (1, 1), (0, 0)),
        ([1, 2, 3, 4], [2, 2, 5, 3], (2, 1), (2, 1)),
        ([3, 1, 6, 7], [1, 1, 2, 3], (2, 3), (1, 0)),
    ];
    let mut gen = Gen::new(11);
    for (k, &case) in cases.iter().enumerate() {
        let (xd, wd, stride, padding) = case;
        for with_bias in [true, false] {
            let mut init = Init::new(k as u64);
            let conv = Conv2d::new(&BE, &mut init, "c", wd, stride, padding, with_bias).unwrap();
            let x = gen.vec(xd.iter().product(), -1.0, 1.0);
            let xt = up(&x, &xd);
            let y = conv.forward(&BE, &xt).unwrap();
            let gy = gen.vec(y.numel(), -1.0, 1.0);
            let bias = conv.bias.as_ref().map_or(vec![], |p| down(&p.value));
            let (ry, rdx, rdw, rdb) = direct(&x, &down(&conv.weight.value), &bias, &gy, case);
            let what = format!("case {k} {case:?} bias={with_bias}");
            close(&format!("{what} y"), &down(&y), &ry, 1e-5);
            let mut grads = Grads::new();
            let dx = conv
                .backward(&BE, &xt, &up(&gy, y.dims()), &mut grads)
                .unwrap();
            assert_eq!(dx.dims(), &xd);
            close(&format!("{what} dx"), &down(&dx), &rdx, 1e-5);
            let dw = grads.get("c.weight").unwrap();
            assert_eq!(dw.dims(), &wd);
            close(&format!("{what} dw"), &down(dw), &rdw, 1e-5);
            assert_eq!(grads.get("c.bias").is_some(), with_bias);
            if let Some(db) = grads.get("c.bias") {
                close(&format!("{what} db"), &down(db), &rdb, 1e-5);
            }
            assert_eq!(conv.param_names().len(), 1 + with_bias as usize);
        }
    }
}

#[test]
fn conv2d_shape_errors_name_the_op() {
    let mut init = Init::new(0);
    let conv = Conv2d::new(&BE, &mut init, "c", [4, 3, 3, 3], (1, 1), (0, 0), true).unwrap();
    let err = |dims: &[usize]| {
        let x = BE.zeros(dims).unwrap();
        conv.forward(&BE, &x).unwrap_err().to_string()
    };
    assert!(
        err(&[2, 4, 5, 5]).contains("conv2d"),
        "{}",
        err(&[2, 4, 5, 5])
    );
    assert!(err(&[3, 5, 5]).contains("conv2d"));
    assert!(err(&[1, 3, 2, 5]).contains("larger"));
}

/// One rough throughput figure (not a benchmark): Inception-v3's 192→64 1×1 and 3×3
/// convolutions at 35×35 with a batch of 8.
#[test]
fn conv2d_inception_sized_throughput() {
    let mut init = Init::new(1);
    let x = BE
        .fill_uniform(&[8, 192, 35, 35], rae_core::PhiloxKey::new(1, 2), 0)
        .unwrap();
    for (k, p) in [(1usize, 0usize), (3, 1)] {
        let conv = Conv2d::new(&BE, &mut init, "c", [64, 192, k, k], (1, 1), (p, p), true).unwrap();
        conv.forward(&BE, &x).unwrap();
        let t = std::time::Instant::now();
        let y = conv.forward(&BE, &x).unwrap();
        let s = t.elapsed().as_secs_f64();
        let flops = 2.0 * (8 * 64 * 35 * 35 * 192 * k * k) as f64;
        assert_eq!(y.dims(), &[8, 64, 35, 35]);
        eprintln!(
            "conv2d {k}x{k} 192->64 35x35 n=8: {:.1} ms, {:.1} GFLOP/s",
            s * 1e3,
            flops / s / 1e9
        );
    }
}
