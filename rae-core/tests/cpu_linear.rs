//! The CPU backend's linear layer of many rows, which reuses a `[k, n]` copy of its weight
//! from the second use on (`cpu/matmul/weights_t.rs`): the first use (the weight as it is),
//! the second (the kept copy) and a weight updated in place in between all equal the
//! product computed in f64, and the copied and uncopied paths agree closely.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::Backend;
use rae_core::CpuBackend;

mod common;
use common::{down, up, Gen};

const BE: CpuBackend = CpuBackend::new();

/// `x · wᵀ + b` in f64.
fn reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                .sum();
            y[r * n + j] = dot + b[j] as f64;
        }
    }
    y
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

#[test]
fn kept_weight_copies_give_the_product() {
    let mut g = Gen::new(11);
    for (rows, k, n) in [(600, 96, 40), (520, 33, 129), (1024, 64, 64)] {
        let xv = g.vec(rows * k, -1.0, 1.0);
        let mut wv = g.vec(n * k, -1.0, 1.0);
        let before = wv.clone();
        let bv = g.vec(n, -1.0, 1.0);
        let x = up(&xv, &[rows, k]);
        let b = up(&bv, &[n]);
        let mut w = up(&wv, &[n, k]);
        let want = reference(&xv, &wv, &bv, rows, k, n);
        let first = down(&BE.linear(&x, &w, Some(&b)).unwrap());
        let second = down(&BE.linear(&x, &w, Some(&b)).unwrap());
        let third = down(&BE.linear(&x, &w, Some(&b)).unwrap());
        for got in [&first, &second, &third] {
            let e = worst(got, &want);
            assert!(e < 1e-5, "{rows}x{k}x{n}: error {e}");
        }
        assert_eq!(second, third, "the kept copy gives the same bits each time");
        // Without a bias, through the same copy.
        let nob = down(&BE.linear(&x, &w, None).unwrap());
        let zeros = vec![0.0f32; n];
        let e = worst(&nob, &reference(&xv, &wv, &zeros, rows, k, n));
        assert!(e < 1e-5, "no bias: error {e}");
        // Another weight of the same shape gets a copy of its own.
        let wv2 = g.vec(n * k, -1.0, 1.0);
        let w2 = up(&wv2, &[n, k]);
        let want2 = reference(&xv, &wv2, &bv, rows, k, n);
        for _ in 0..2 {
            let e = worst(&down(&BE.linear(&x, &w2, Some(&b)).unwrap()), &want2);
            assert!(e < 1e-5, "a second weight: error {e}");
        }
        // An update in place (as AdamW's and the EMA's) is never hidden by a stale copy.
        wv.iter_mut().for_each(|v| *v = 1.0 - *v);
        let other = up(&wv, &[n, k]);
        BE.ema_update(&mut w, &other, 0.25).unwrap();
        let now = down(&w);
        assert!(now != before, "the update changed the weight");
        let want = reference(&xv, &now, &bv, rows, k, n);
        for _ in 0..3 {
            let got = down(&BE.linear(&x, &w, Some(&b)).unwrap());
            let e = worst(&got, &want);
            assert!(e < 1e-5, "after an update: error {e}");
        }
    }
}
