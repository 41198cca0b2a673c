//! Reconstruction quality of images in `[0, 1]` (§0 pixel space, §6.2): PSNR and SSIM.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

fn check_pair(what: &str, a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::invalid(
            what,
            format!(
                "images must be non-empty and of equal size, got {} and {} values",
                a.len(),
                b.len()
            ),
        ));
    }
    if let Some(bad) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{what}: pixel value {bad}"),
        });
    }
    Ok(())
}

/// Peak signal-to-noise ratio `10·log10(1 / MSE)` in dB for images with values in `[0, 1]`
/// (peak 1); identical images give `+∞`.
pub fn psnr(a: &[f32], b: &[f32]) -> Result<f64> {
    check_pair("psnr", a, b)?;
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(-10.0 * libm::log10(mse))
}

/// Window size of SSIM.
const WIN: usize = 11;
/// Standard deviation of the Gaussian window.
const WIN_SIGMA: f64 = 1.5;

/// The normalised 1-D Gaussian window (size 11, σ 1.5).
fn window() -> [f64; WIN] {
    let mut w = [0.0; WIN];
    let c = (WIN / 2) as f64;
    for (i, wi) in w.iter_mut().enumerate() {
        let x = i as f64 - c;
        *wi = libm::exp(-x * x / (2.0 * WIN_SIGMA * WIN_SIGMA));
    }
    let s: f64 = w.iter().sum();
    for wi in w.iter_mut() {
        *wi /= s;
    }
    w
}

/// Separable "valid" filtering of an `[h, w]` plane with the window: `[h − 10, w − 10]`.
fn filter(x: &[f64], h: usize, w: usize, k: &[f64; WIN]) -> Vec<f64> {
    let (oh, ow) = (h - WIN + 1, w - WIN + 1);
    let mut rows = vec![0.0; h * ow];
    for i in 0..h {
        for j in 0..ow {
            let src = &x[i * w + j..i * w + j + WIN];
            rows[i * ow + j] = src.iter().zip(k).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for i in 0..oh {
        for j in 0..ow {
            out[i * ow + j] = (0..WIN).map(|d| rows[(i + d) * ow + j] * k[d]).sum();
        }
    }
    out
}

/// Structural similarity of two `[C, H, W]` images with values in `[0, 1]`: the mean over
/// channels and positions of the SSIM map with an 11×11 Gaussian window (σ = 1.5, no
/// padding: positions where the window fits), `C1 = 0.01²`, `C2 = 0.03²` (data range 1):
/// `((2μxμy + C1)(2σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2))`.
pub fn ssim(a: &[f32], b: &[f32], dims: [usize; 3]) -> Result<f64> {
    check_pair("ssim", a, b)?;
    let [c, h, w] = dims;
    if c * h * w != a.len() {
        return Err(Error::invalid(
            "ssim",
            format!("dims [{c}, {h}, {w}] do not cover the {} values", a.len()),
        ));
    }
    if h < WIN || w < WIN {
        return Err(Error::invalid(
            "ssim",
            format!("images must be at least {WIN}x{WIN}, got {h}x{w}"),
        ));
    }
    const C1: f64 = 0.01 * 0.01;
    const C2: f64 = 0.03 * 0.03;
    let k = window();
    let plane = h * w;
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..c {
        let x: Vec<f64> = a[ch * plane..(ch + 1) * plane]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let y: Vec<f64> = b[ch * plane..(ch + 1) * plane]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
        let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
        let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
        let mx = filter(&x, h, w, &k);
        let my = filter(&y, h, w, &k);
        let exx = filter(&xx, h, w, &k);
        let eyy = filter(&yy, h, w, &k);
        let exy = filter(&xy, h, w, &k);
        for i in 0..mx.len() {
            let (ux, uy) = (mx[i], my[i]);
            let sxx = exx[i] - ux * ux;
            let syy = eyy[i] - uy * uy;
            let sxy = exy[i] - ux * uy;
            let num = (2.0 * ux * uy + C1) * (2.0 * sxy + C2);
            let den = (ux * ux + uy * uy + C1) * (sxx + syy + C2);
            total += num / den;
            count += 1;
        }
    }
    Ok(total / count as f64)
}
