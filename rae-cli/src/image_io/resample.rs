//! Pillow's `Image.resize` for 8-bit RGB images, bit for bit (its `libImaging/Resample.c`:
//! the same weights and rounding from Pillow 7 to 13; Pillow 13 changed the order of the
//! passes, [`PilPassOrder`]).
//!
//! The resize is separable: a horizontal pass (when the width changes) and a vertical pass
//! (when the height changes), the first into an 8-bit intermediate. Each output pixel of a pass
//! is a weighted sum over a window of input pixels:
//!
//! * `scale = in / out`, `fscale = max(scale, 1)` (the kernel widens when shrinking),
//!   `support = filter_support × fscale`;
//! * output `i` is centred at `c = (i + 0.5) × scale`; its window is
//!   `[max(trunc(c − support + 0.5), 0), min(trunc(c + support + 0.5), in))`;
//! * tap `j` weighs `filter((j − c + 0.5) × (1 / fscale))`, the weights divided by their sum
//!   (when that is not zero), all in `f64`;
//! * the weights become fixed point with 22 fraction bits, rounding half away from zero;
//! * a sum starts at `2^21` (one half), adds `pixel × weight` in 32-bit integers, and the
//!   result is `sum >> 22` clamped to `0..=255`.
//!
//! The filters: `BOX` is 1 on `(−0.5, 0.5]` (support 0.5); `BICUBIC` is Keys' cubic with
//! `a = −0.5` (support 2).

use image::RgbImage;

/// Fraction bits of the fixed-point weights (Pillow's `PRECISION_BITS`: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// A resampling filter of Pillow's `Image.resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BOX`: the mean over each output pixel's footprint.
    Box,
    /// `Image.BICUBIC`: Keys' cubic convolution, `a = −0.5`.
    Bicubic,
}

impl PilFilter {
    /// Half the width of the kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            PilFilter::Box => 0.5,
            PilFilter::Bicubic => 2.0,
        }
    }

    /// The kernel at `x` (in input pixels at scale 1).
    fn eval(self, x: f64) -> f64 {
        match self {
            PilFilter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            PilFilter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// The fixed-point weights of one pass: for each output index, its window's first input
/// index and length, and `stride` weights (the first `len` used).
struct Weights {
    start: Vec<usize>,
    len: Vec<usize>,
    stride: usize,
    k: Vec<i32>,
}

impl Weights {
    /// The weights resampling `inp` pixels to `out` (both at least 1).
    fn new(inp: usize, out: usize, filter: PilFilter) -> Weights {
        let scale = inp as f64 / out as f64;
        let fscale = scale.max(1.0);
        let support = filter.support() * fscale;
        let inv = 1.0 / fscale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut w = Weights {
            start: Vec::with_capacity(out),
            len: Vec::with_capacity(out),
            stride,
            k: vec![0; out * stride],
        };
        let mut taps = vec![0.0f64; stride];
        for i in 0..out {
            let center = (i as f64 + 0.5) * scale;
            // `as` truncates toward zero (and saturates), as C's (int) cast does here.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, inp as i64) as usize;
            let n = hi.saturating_sub(lo).min(stride);
            let mut sum = 0.0f64;
            for (j, t) in taps[..n].iter_mut().enumerate() {
                *t = filter.eval(((j + lo) as f64 - center + 0.5) * inv);
                sum += *t;
            }
            let row = &mut w.k[i * stride..i * stride + n];
            for (dst, &t) in row.iter_mut().zip(&taps[..n]) {
                let t = if sum != 0.0 { t / sum } else { t };
                *dst = to_fixed(t);
            }
            w.start.push(lo);
            w.len.push(n);
        }
        w
    }

    /// Output `i`'s window: its first input index and weights.
    fn window(&self, i: usize) -> (usize, &[i32]) {
        let k = &self.k[i * self.stride..i * self.stride + self.len[i]];
        (self.start[i], k)
    }
}

/// A normalised weight as a fixed-point integer, rounding half away from zero (Pillow's
/// `normalize_coeffs_8bpc`: `(int)(±0.5 + w × 2^22)`).
fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    if w < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

/// A fixed-point sum back to 8 bits (Pillow's `clip8`).
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The order of Pillow's two passes, which changes the result (the intermediate is rounded
/// to 8 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PilPassOrder {
    /// Pillow 7 to 12: horizontal, then vertical.
    #[default]
    Classic,
    /// Pillow 13: vertical first when the height shrinks by more than twice as many pixels
    /// as the width does, otherwise horizontal first.
    Pillow13,
}

impl PilPassOrder {
    /// Whether resizing `w0 × h0` to `w1 × h1` runs the vertical pass first.
    fn vertical_first(self, (w0, h0): (usize, usize), (w1, h1): (usize, usize)) -> bool {
        let (dw, dh) = (w0 as i64 - w1 as i64, h0 as i64 - h1 as i64);
        self == PilPassOrder::Pillow13 && dh > 0 && dh > 2 * dw
    }
}

/// The rounding half a fixed-point sum starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resamples each row of `src` (rows of `w0` pixels) to `hz`'s output width, into `out`.
/// Sums wrap as Pillow's `int` sums do on its platforms (they never reach the bounds:
/// `255 × Σ|w|` stays far below `2^31 / 2^22`).
fn horizontal(src: &[u8], w0: usize, hz: &Weights, out: &mut [u8]) {
    let w1 = hz.start.len();
    for (in_row, out_row) in src.chunks_exact(w0 * 3).zip(out.chunks_exact_mut(w1 * 3)) {
        for x in 0..w1 {
            let (lo, k) = hz.window(x);
            let taps = &in_row[lo * 3..(lo + k.len()) * 3];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            let mut j = 0;
            for &kj in k {
                r = r.wrapping_add((taps[j] as i32).wrapping_mul(kj));
                g = g.wrapping_add((taps[j + 1] as i32).wrapping_mul(kj));
                b = b.wrapping_add((taps[j + 2] as i32).wrapping_mul(kj));
                j += 3;
            }
            out_row[x * 3] = clip8(r);
            out_row[x * 3 + 1] = clip8(g);
            out_row[x * 3 + 2] = clip8(b);
        }
    }
}

/// Resamples each column of `src` (rows of `w` pixels, the first being input row `row0`) to
/// `vt`'s output height, into `out`, a row of sums at a time.
fn vertical(src: &[u8], w: usize, row0: usize, vt: &Weights, out: &mut [u8]) {
    let stride = w * 3;
    let mut sum = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (lo, k) = vt.window(y);
        sum.fill(HALF);
        let rows = src[(lo - row0) * stride..].chunks_exact(stride);
        for (row, &kj) in rows.zip(k) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s = s.wrapping_add((v as i32).wrapping_mul(kj));
            }
        }
        for (o, &s) in out_row.iter_mut().zip(&sum) {
            *o = clip8(s);
        }
    }
}

/// Resizes an RGB image to `w × h` exactly as Pillow's `Image.resize((w, h), filter)` does
/// for an 8-bit RGB image (no `box`, no `reducing_gap`), with the pass order of `order`.
/// The image and `w × h` must have at least one pixel.
pub fn pil_resize(
    img: &RgbImage,
    w: u32,
    h: u32,
    filter: PilFilter,
    order: PilPassOrder,
) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (w as usize, h as usize);
    assert!(
        w0.min(h0).min(w1).min(h1) >= 1,
        "pil_resize of {w0}×{h0} to {w1}×{h1}: each side must be at least 1"
    );
    let src = img.as_raw();
    let mut out = RgbImage::new(w, h);
    match (w1 != w0, h1 != h0) {
        (false, false) => out.copy_from_slice(src),
        (true, false) => horizontal(src, w0, &Weights::new(w0, w1, filter), &mut out),
        (false, true) => vertical(src, w0, 0, &Weights::new(h0, h1, filter), &mut out),
        (true, true) => {
            let hz = Weights::new(w0, w1, filter);
            let vt = Weights::new(h0, h1, filter);
            if order.vertical_first((w0, h0), (w1, h1)) {
                let mut tmp = vec![0u8; w0 * h1 * 3];
                vertical(src, w0, 0, &vt, &mut tmp);
                horizontal(&tmp, w0, &hz, &mut out);
            } else {
                // Only the rows the vertical pass reads are resampled horizontally.
                let first = vt.start[0];
                let last = vt.start[h1 - 1] + vt.len[h1 - 1];
                let mut tmp = vec![0u8; (last - first) * w1 * 3];
                horizontal(&src[first * w0 * 3..last * w0 * 3], w0, &hz, &mut tmp);
                vertical(&tmp, w1, first, &vt, &mut out);
            }
        }
    }
    out
}
