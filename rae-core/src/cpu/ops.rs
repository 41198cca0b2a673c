//! Scalar and row kernels of the CPU backend.

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{AdamWStep, PatchOrder, Reduce, Unary};
use crate::check::CondDims;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_C: f32 = 0.044_715;
const INV_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `e^x` in f32 by range reduction to `|r| ≤ ln2/2` and a degree-7 Taylor polynomial
/// (relative error below 1e-7, about one ulp), written so loops over it vectorise; inputs are
/// clamped to the finite range of f32 (so it never returns infinity).
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `n` as an integer, read from the bits of `shifted` (`1.5·2^23 + n`, |n| ≤ 127: its
    // last mantissa bits are `n`). The same value as `n as i32`, whose saturating
    // conversion LLVM turns into a scalar conversion per lane (about 8× slower).
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `x · sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// The largest argument `erf` and the GELU density pass to `exp(−·)`: `e^{−80}` times the
/// factors they apply stays a normal f32.
const EXP_FLOOR: f32 = 80.0;

/// `erf(x)` in f32 without branches, so loops over it vectorise: Abramowitz and Stegun's
/// rational approximation 7.1.26 (`1 − t·P(t)·e^{−x²}`, `t = 1/(1 + p·|x|)`) with the sign
/// restored; absolute error below 6e-7 over the whole line (5.2e-7 measured in the tests against
/// f64), against `libm::erff`'s one ulp and its branchy range reduction.
#[inline]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    // |x| and the sign by bit masks: libm's fabsf/copysignf are calls that stop the
    // surrounding loop from vectorising.
    const SIGN: u32 = 0x8000_0000;
    let a = f32::from_bits(x.to_bits() & !SIGN);
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    // Beyond |x| = √30 the result is 1 in f32 whatever the exponential's value; capping its
    // argument at 80 keeps `poly·e^{−x²}` a normal number, where `e^{−87}` (the floor of
    // `exp`) times `poly` is subnormal, and subnormal arithmetic costs ~100 cycles.
    let y = 1.0 - poly * exp(-(a * a).min(EXP_FLOOR));
    f32::from_bits(y.to_bits() | (x.to_bits() & SIGN))
}

/// `√x`, correctly rounded either way: `f32::sqrt` under `std` (an LLVM intrinsic that
/// vectorises), `libm::sqrtf` otherwise.
#[inline]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.sqrt()
    }
    #[cfg(not(feature = "std"))]
    {
        libm::sqrtf(x)
    }
}

/// Exact (erf) GELU.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * INV_SQRT_2))
}

/// The derivative of [`gelu_erf`].
#[inline]
pub fn gelu_erf_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
    // Capped as in `erf`: the density at |x| ≥ 12.6 (e^{−80}·0.4) is a normal number.
    let pdf = INV_SQRT_2PI * exp(-(0.5 * x * x).min(EXP_FLOOR));
    cdf + x * pdf
}

/// `max(x, 0)`, NaN kept (as PyTorch's `relu`); a compare and select, so loops vectorise.
#[inline]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// The derivative of [`relu`]: 1 where `x > 0`, else 0 (0 at 0 and at NaN, as PyTorch's).
#[inline]
pub fn relu_grad(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// The negative slope of [`Unary::LeakyRelu`].
pub const LEAKY_SLOPE: f32 = 0.2;

/// LeakyReLU: `x` where `x > 0`, else `0.2·x` (NaN kept).
#[inline]
pub fn leaky_relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * LEAKY_SLOPE
    }
}

/// The function of a [`Unary`] op.
#[inline]
pub fn unary(op: Unary, x: f32) -> f32 {
    match op {
        Unary::Silu => silu(x),
        Unary::GeluErf => gelu_erf(x),
        Unary::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
            0.5 * x * (1.0 + libm::tanhf(u))
        }
        Unary::Sigmoid => sigmoid(x),
        Unary::Square => x * x,
        Unary::Abs => libm::fabsf(x),
        Unary::Relu => relu(x),
        Unary::LeakyRelu => leaky_relu(x),
    }
}

/// The derivative of a [`Unary`] op at `x`.
#[inline]
pub fn unary_grad(op: Unary, x: f32) -> f32 {
    match op {
        Unary::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        Unary::GeluErf => gelu_erf_grad(x),
        Unary::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
            let th = libm::tanhf(u);
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x);
            0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du
        }
        Unary::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        Unary::Square => 2.0 * x,
        Unary::Abs => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Unary::Relu => relu_grad(x),
        Unary::LeakyRelu => {
            if x > 0.0 {
                1.0
            } else {
                LEAKY_SLOPE
            }
        }
    }
}

/// Reduction of the middle axis of an `[outer, mid, inner]` view. Accumulates in `f64`, so a
/// sum over many values (a loss over a whole batch) is the correctly rounded one whatever
/// way the values were split (a data-parallel step sums its shares separately, §7.6).
pub fn reduce(op: Reduce, x: &[f32], dims: [usize; 3]) -> Vec<f32> {
    let [outer, mid, inner] = dims;
    let scale = if op == Reduce::Mean && mid > 0 {
        1.0 / mid as f64
    } else {
        1.0
    };
    if inner == 1 {
        // Contiguous rows (a whole tensor's sum of squares for the gradient norm, a loss).
        return (0..outer)
            .map(|o| (row_sum(op, &x[o * mid..(o + 1) * mid]) * scale) as f32)
            .collect();
    }
    let mut out = super::pool::zeroed(outer * inner);
    let mut acc = vec![0.0f64; inner];
    for o in 0..outer {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for m in 0..mid {
            let row = &x[(o * mid + m) * inner..(o * mid + m + 1) * inner];
            match op {
                Reduce::SumSq => acc.iter_mut().zip(row).for_each(|(a, &v)| {
                    let v = v as f64;
                    *a += v * v
                }),
                Reduce::Sum | Reduce::Mean => {
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64)
                }
            }
        }
        for (d, a) in out[o * inner..(o + 1) * inner].iter_mut().zip(&acc) {
            *d = (*a * scale) as f32;
        }
    }
    out
}

/// The `f64` sum (of squares for [`Reduce::SumSq`]) of one contiguous row: eight running
/// sums so the loop vectorises, and one part per thread for a long row.
fn row_sum(op: Reduce, row: &[f32]) -> f64 {
    fn lanes(row: &[f32], sq: bool) -> f64 {
        let mut acc = [0.0f64; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                let v = v as f64;
                *a += if sq { v * v } else { v };
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&v| if sq { v as f64 * v as f64 } else { v as f64 })
            .sum();
        acc.iter().sum::<f64>() + tail
    }
    let sq = op == Reduce::SumSq;
    let part = super::par::part_len(row.len());
    if part >= row.len() {
        return lanes(row, sq);
    }
    let mut partial = vec![0.0f64; row.len().div_ceil(part)];
    super::par::for_each_part(partial.iter_mut().zip(row.chunks(part)), |(s, c)| {
        *s = lanes(c, sq)
    });
    partial.iter().sum()
}

/// LayerNorm forward; returns `(y, mean, rstd)`.
pub fn layernorm(
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    c: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len().checked_div(c).unwrap_or(0);
    let mut y = super::pool::scratch(x.len());
    let mut means = super::pool::zeroed(rows);
    let mut rstds = super::pool::zeroed(rows);
    if rows == 0 {
        return (y, means, rstds);
    }
    // Rows are independent: one part of whole rows per thread.
    let per = rows_per_part(rows, c);
    let parts = y
        .chunks_mut(per * c)
        .zip(x.chunks(per * c))
        .zip(means.chunks_mut(per).zip(rstds.chunks_mut(per)));
    // The sums in sixteen lanes (not one chain of dependent additions) and the loops at the
    // CPU's vector width.
    super::par::for_each_part(parts, |((y, x), (means, rstds))| {
        super::simd::wide_loop! {
            for (r, (yr, row)) in y.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                let mean = sum_lanes(row) / c as f32;
                let var = sum_lanes_of(row, |v| (v - mean) * (v - mean)) / c as f32;
                let rstd = 1.0 / sqrt(var + eps);
                means[r] = mean;
                rstds[r] = rstd;
                for (o, &v) in yr.iter_mut().zip(row) {
                    *o = (v - mean) * rstd;
                }
                if let Some(g) = gamma {
                    yr.iter_mut().zip(g).for_each(|(o, &g)| *o *= g);
                }
                if let Some(b) = beta {
                    yr.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
                }
            }
        }
    });
    (y, means, rstds)
}

/// Whole rows of width `c` per thread's part of a row-wise pass over `rows` rows.
fn rows_per_part(rows: usize, c: usize) -> usize {
    super::par::part_len(rows * c.max(1))
        .div_ceil(c.max(1))
        .max(1)
}

/// RMSNorm forward; returns `(y, rstd)`.
pub fn rmsnorm(x: &[f32], w: Option<&[f32]>, c: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len().checked_div(c).unwrap_or(0);
    let mut y = super::pool::scratch(x.len());
    let mut rstds = super::pool::zeroed(rows);
    if rows == 0 {
        return (y, rstds);
    }
    let per = rows_per_part(rows, c);
    let parts = y
        .chunks_mut(per * c)
        .zip(x.chunks(per * c))
        .zip(rstds.chunks_mut(per));
    super::par::for_each_part(parts, |((y, x), rstds)| {
        super::simd::wide_loop! {
            for (r, (yr, row)) in y.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                let ms = sum_lanes_of(row, |v| v * v) / c as f32;
                let rstd = 1.0 / sqrt(ms + eps);
                rstds[r] = rstd;
                match w {
                    Some(w) => {
                        for ((o, &v), &w) in yr.iter_mut().zip(row).zip(w) {
                            *o = v * rstd * w;
                        }
                    }
                    None => yr.iter_mut().zip(row).for_each(|(o, &v)| *o = v * rstd),
                }
            }
        }
    });
    (y, rstds)
}

/// Gradients of a normalisation.
pub struct NormBackward {
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Shared backward of LayerNorm (`mean` given) and RMSNorm (`mean` absent):
/// `x̂ = (x − μ)·rstd`, `g = dy·γ`, `dx = rstd·(g − mean(g)·[LN] − x̂·mean(g·x̂))`.
pub fn norm_backward(
    x: &[f32],
    mean: Option<&[f32]>,
    rstd: &[f32],
    w: Option<&[f32]>,
    dy: &[f32],
    c: usize,
) -> NormBackward {
    let rows = rstd.len();
    let mut dx = super::pool::zeroed(x.len());
    let mut dw = super::pool::zeroed(c);
    let mut db = super::pool::zeroed(c);
    let mut xhat = super::pool::zeroed(c);
    let mut g = super::pool::zeroed(c);
    for r in 0..rows {
        let mu = mean.map_or(0.0, |m| m[r]);
        let rs = rstd[r];
        let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
        for j in 0..c {
            xhat[j] = (x[r * c + j] - mu) * rs;
            let d = dy[r * c + j];
            g[j] = d * w.map_or(1.0, |w| w[j]);
            sum_g += g[j];
            sum_gx += g[j] * xhat[j];
            dw[j] += d * xhat[j];
            db[j] += d;
        }
        let inv_c = 1.0 / c as f32;
        let mean_g = if mean.is_some() { sum_g * inv_c } else { 0.0 };
        let mean_gx = sum_gx * inv_c;
        for j in 0..c {
            dx[r * c + j] = rs * (g[j] - mean_g - xhat[j] * mean_gx);
        }
    }
    NormBackward { dx, dw, db }
}

/// Numerically stable softmax of one row scaled by `scale > 0`: `softmax(row·scale)`. The
/// maximum is taken before scaling (rounding is monotonic, so `max·scale` rounds to the
/// maximum of the scaled values) and each value is scaled as it is exponentiated: the same
/// bits as scaling the row first, one pass over memory fewer.
pub fn softmax_row(row: &[f32], out: &mut [f32], scale: f32) {
    let max = max_lanes(row) * scale;
    // The exponentials in a loop of their own and the sum in sixteen lanes: both vectorise.
    for (o, &v) in out.iter_mut().zip(row) {
        *o = exp(v * scale - max);
    }
    let inv = 1.0 / sum_lanes(out);
    out.iter_mut().for_each(|o| *o *= inv);
}

/// The backward of [`softmax_row`] for one row: from the output `y` and its gradient `dy`,
/// `scale · y ⊙ (dy − ⟨y, dy⟩)`, the gradient with respect to the unscaled row.
pub fn softmax_backward_row(y: &[f32], dy: &[f32], out: &mut [f32], scale: f32) {
    let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
    for ((o, &yv), &dv) in out.iter_mut().zip(y).zip(dy) {
        *o = scale * (yv * (dv - dot));
    }
}

/// The f32 sum of `xs` in sixteen interleaved running sums (a vector register's worth), so
/// the loop is not one long chain of dependent additions.
#[inline]
pub fn sum_lanes(xs: &[f32]) -> f32 {
    sum_lanes_of(xs, |v| v)
}

/// The f32 sum of `f(x)` over `xs`, in the order of [`sum_lanes`].
#[inline(always)]
pub fn sum_lanes_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// The largest of `xs` (−∞ for none; NaNs are passed over as `f32::max` does), in sixteen
/// running maxima so the loop vectorises. The maximum does not depend on the order.
#[inline(always)]
pub fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

/// RoPE on one head vector (§3.4); with `inverse` the transposed rotation (the backward).
pub fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32], inverse: bool) {
    for p in 0..x.len() / 2 {
        let (a, b) = (x[2 * p], x[2 * p + 1]);
        if inverse {
            out[2 * p] = a * cos[2 * p] + b * sin[2 * p + 1];
            out[2 * p + 1] = b * cos[2 * p + 1] - a * sin[2 * p];
        } else {
            out[2 * p] = a * cos[2 * p] - b * sin[2 * p];
            out[2 * p + 1] = b * cos[2 * p + 1] + a * sin[2 * p + 1];
        }
    }
}

/// The conditioning row of token row `row` (`row = b·N + n`).
#[inline]
pub fn cond_row(row: usize, d: &CondDims) -> usize {
    let (b, n) = (row / d.n, row % d.n);
    b * d.nc + n / d.repeat()
}

/// Sums `dy` (times `x` when given) over each group of tokens sharing a conditioning row.
pub fn cond_reduce(dy: &[f32], x: Option<&[f32]>, d: &CondDims) -> Vec<f32> {
    let mut out = super::pool::zeroed(d.b * d.nc * d.c);
    for row in 0..d.b * d.n {
        let crow = cond_row(row, d);
        for j in 0..d.c {
            let v = dy[row * d.c + j] * x.map_or(1.0, |x| x[row * d.c + j]);
            out[crow * d.c + j] += v;
        }
    }
    out
}

/// The Fourier phase `t·w·2·π`, multiplied in the reference's order in f32.
#[inline]
pub fn fourier_phase(t: f32, w: f32) -> f32 {
    t * w * 2.0 * core::f32::consts::PI
}

/// Position of `(channel, row, column)` inside a flattened patch.
#[inline]
pub fn patch_index(order: PatchOrder, c: usize, p: usize, ci: usize, r: usize, s: usize) -> usize {
    match order {
        PatchOrder::ChannelFirst => (ci * p + r) * p + s,
        PatchOrder::ChannelLast => (r * p + s) * c + ci,
    }
}

/// AdamW on host slices in PyTorch's operation order, split across the threads (each value
/// is updated on its own, so the split does not change a bit).
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamWStep) {
    let part = super::par::part_len(p.len());
    let parts = p
        .chunks_mut(part)
        .zip(g.chunks(part))
        .zip(m.chunks_mut(part).zip(v.chunks_mut(part)));
    super::par::for_each_part(parts, |((p, g), (m, v))| adamw_part(p, g, m, v, hp));
}

fn adamw_part(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamWStep) {
    let (bc1, bc2) = hp.bias_corrections();
    let step_size = hp.lr / bc1;
    let bc2_sqrt = libm::sqrtf(bc2);
    let decay = 1.0 - hp.lr * hp.weight_decay;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let gi = g * hp.grad_scale;
        *p *= decay;
        *m += (gi - *m) * (1.0 - hp.beta1);
        *v = *v * hp.beta2 + gi * gi * (1.0 - hp.beta2);
        let denom = sqrt(*v) / bc2_sqrt + hp.eps;
        *p -= step_size * *m / denom;
    }
}

/// `ema ← ema·decay + param·(1 − decay)`, split across the threads.
pub fn ema(ema: &mut [f32], param: &[f32], decay: f32) {
    let part = super::par::part_len(ema.len());
    let parts = ema.chunks_mut(part).zip(param.chunks(part));
    super::par::for_each_part(parts, |(e, p)| {
        for (e, &p) in e.iter_mut().zip(p) {
            *e = *e * decay + p * (1.0 - decay);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate_over_the_f32_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = libm::exp(x as f64);
            let got = super::exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(super::exp(0.0), 1.0);
    }

    #[test]
    fn fast_erf_is_within_6e_7_of_f64_erf() {
        let mut worst = 0.0f64;
        let mut x = -9.0f32;
        while x < 9.0 {
            let want = libm::erf(x as f64);
            worst = worst.max((super::erf(x) as f64 - want).abs());
            x += 0.000_731;
        }
        assert!(worst < 6e-7, "absolute error {worst}");
        assert!(super::erf(f32::NAN).is_nan());
        assert_eq!(super::erf(f32::INFINITY), 1.0);
        assert_eq!(super::erf(f32::NEG_INFINITY), -1.0);
    }
}
