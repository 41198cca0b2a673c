//! DiffAug (§2.7.6), differentiable: per-sample translation (zero fill), brightness,
//! saturation, contrast and, when its ratio is positive, cutout, driven by seven uniforms
//! per sample (`[7, B]`, row `k` = `u_k` of every sample). Built from generic backend ops,
//! so it runs on every backend.

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Binary, Reduce};
use crate::error::{Error, Result};
use crate::rng::PhiloxKey;
use crate::tensor::Tensor;

/// The augmentation's settings (the reference's `DiffAug(prob = 1, cutout)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffAug {
    /// Translation range as a fraction of the side (0.125).
    pub translation: f32,
    /// Cutout square side as a fraction of the side (0 = off).
    pub cutout: f32,
}

impl Default for DiffAug {
    fn default() -> Self {
        DiffAug {
            translation: 0.125,
            cutout: 0.0,
        }
    }
}

/// What [`DiffAug::apply`] keeps for its backward.
#[derive(Debug, Clone)]
pub struct DiffAugSaved<B: Backend> {
    dims: [usize; 4],
    shifts: Vec<(i64, i64)>,
    sat: Vec<f32>,
    con: Vec<f32>,
    mask: Option<Tensor<B>>,
}

/// Python's `round` (half to even).
fn round_even(x: f64) -> i64 {
    let r = libm::round(x);
    if (x - libm::trunc(x)).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// `x` `[n, c, h, w]` shifted so output `(y, x)` reads input `(y + ty, x + tx)`, zero
/// outside.
fn shift<B: Backend>(b: &B, x: &Tensor<B>, d: [usize; 4], ty: i64, tx: i64) -> Result<Tensor<B>> {
    let [n, c, h, w] = d;
    // Rows: view [n·c, h, w].
    let rows = shift_axis(b, x, [n * c, h, w], ty)?;
    shift_axis(b, &rows, [n * c * h, w, 1], tx)?.reshape(&d)
}

/// Shift along the middle axis of `[outer, len, inner]`: `out[i] = in[i + t]`, zero fill.
fn shift_axis<B: Backend>(b: &B, x: &Tensor<B>, v: [usize; 3], t: i64) -> Result<Tensor<B>> {
    let [outer, len, inner] = v;
    if t == 0 {
        return Ok(x.clone());
    }
    let k = t.unsigned_abs() as usize;
    if k >= len {
        return b.zeros(x.dims());
    }
    let zeros = b.zeros(&[outer, k, inner])?;
    let out = if t > 0 {
        let kept = b.slice_mid(x, v, k, len - k)?;
        b.concat_mid(&[&kept, &zeros], outer, inner)?
    } else {
        let kept = b.slice_mid(x, v, 0, len - k)?;
        b.concat_mid(&[&zeros, &kept], outer, inner)?
    };
    out.reshape(x.dims())
}

/// `[B, C, HW]` copies of a `[B, HW]` tensor.
fn over_channels<B: Backend>(
    b: &B,
    m: &Tensor<B>,
    bs: usize,
    c: usize,
    hw: usize,
) -> Result<Tensor<B>> {
    let parts: Vec<&Tensor<B>> = (0..c).map(|_| m).collect();
    b.concat_mid(&parts, bs, hw)
}

impl DiffAug {
    /// The seven uniforms per sample for a batch of `batch`, `[7, B]` row-major, from
    /// positions `offset ..` of `key` (host draws: the same on every backend).
    pub fn draw(batch: usize, key: PhiloxKey, offset: u64) -> Vec<f32> {
        let mut u = vec![0.0f32; 7 * batch];
        crate::rng::fill_uniform(&mut u, key, offset);
        u
    }

    /// Augments `x` `[B, C, H, W]` with the uniforms `u` (`[7, B]`, 7·B values).
    pub fn apply<B: Backend>(
        &self,
        b: &B,
        x: &Tensor<B>,
        u: &[f32],
    ) -> Result<(Tensor<B>, DiffAugSaved<B>)> {
        let d = match *x.dims() {
            [n, c, h, w] => [n, c, h, w],
            _ => {
                return Err(Error::bad_shape(
                    "diffaug",
                    x.shape(),
                    "expected [B, C, H, W]",
                ))
            }
        };
        let [bs, c, h, w] = d;
        if u.len() != 7 * bs {
            return Err(Error::invalid(
                "diffaug uniforms",
                alloc::format!("expected 7·{bs} = {} values, got {}", 7 * bs, u.len()),
            ));
        }
        let at = |k: usize, i: usize| u[k * bs + i];
        let hw = h * w;
        let chw = c * hw;
        // Translation, per sample.
        let dh = round_even(h as f64 * self.translation as f64);
        let dw = round_even(w as f64 * self.translation as f64);
        let mut shifts = Vec::with_capacity(bs);
        let mut parts = Vec::with_capacity(bs);
        for i in 0..bs {
            let ty = libm::floorf(at(0, i) * (2 * dh + 1) as f32) as i64 - dh;
            let tx = libm::floorf(at(1, i) * (2 * dw + 1) as f32) as i64 - dw;
            shifts.push((ty, tx));
            let xi = b.slice_mid(x, [1, bs, chw], i, 1)?;
            parts.push(shift(b, &xi, [1, c, h, w], ty, tx)?);
        }
        let refs: Vec<&Tensor<B>> = parts.iter().collect();
        let y = b.concat_mid(&refs, 1, chw)?.reshape(&d)?;
        // Brightness.
        let bright: Vec<f32> = (0..bs).map(|i| at(2, i) - 0.5).collect();
        let y = b.bcast_affine(&y, None, Some(&b.upload(&bright, &[bs])?), [1, bs, chw])?;
        // Saturation around the per-pixel channel mean.
        let sat: Vec<f32> = (0..bs).map(|i| at(3, i) * 2.0).collect();
        let mc = b.reduce(Reduce::Mean, &y, [bs, c, hw])?;
        let mcb = over_channels(b, &mc, bs, c, hw)?.reshape(&d)?;
        let dev = b.binary(Binary::Sub, &y, &mcb)?;
        let dev = b.bcast_affine(&dev, Some(&b.upload(&sat, &[bs])?), None, [1, bs, chw])?;
        let y = b.binary(Binary::Add, &dev, &mcb)?;
        // Contrast around the per-sample mean.
        let con: Vec<f32> = (0..bs).map(|i| at(4, i) + 0.5).collect();
        let m = b.reduce(Reduce::Mean, &y, [bs, chw, 1])?.reshape(&[bs])?;
        let neg = b.scale(&m, -1.0)?;
        let dev = b.bcast_affine(&y, None, Some(&neg), [1, bs, chw])?;
        let y = b.bcast_affine(&dev, Some(&b.upload(&con, &[bs])?), Some(&m), [1, bs, chw])?;
        // Cutout.
        let mask = self.cutout_mask(b, u, d)?;
        let y = match &mask {
            Some(mk) => b.binary(Binary::Mul, &y, mk)?,
            None => y,
        };
        Ok((
            y.reshape(&d)?,
            DiffAugSaved {
                dims: d,
                shifts,
                sat,
                con,
                mask,
            },
        ))
    }

    /// The `[B, C, H, W]` cutout mask, or `None` when cutout is off or empty.
    fn cutout_mask<B: Backend>(
        &self,
        b: &B,
        u: &[f32],
        d: [usize; 4],
    ) -> Result<Option<Tensor<B>>> {
        let [bs, c, h, w] = d;
        if self.cutout <= 0.0 {
            return Ok(None);
        }
        let ch = round_even(h as f64 * self.cutout as f64);
        let cw = round_even(w as f64 * self.cutout as f64);
        if ch <= 0 || cw <= 0 {
            return Ok(None);
        }
        let mut mask = vec![1.0f32; bs * h * w];
        for i in 0..bs {
            let oh = libm::floorf(u[5 * bs + i] * (h as i64 + (1 - ch % 2)) as f32) as i64;
            let ow = libm::floorf(u[6 * bs + i] * (w as i64 + (1 - cw % 2)) as f32) as i64;
            for gy in 0..ch {
                let yy = (gy + oh - ch / 2).clamp(0, h as i64 - 1) as usize;
                for gx in 0..cw {
                    let xx = (gx + ow - cw / 2).clamp(0, w as i64 - 1) as usize;
                    mask[(i * h + yy) * w + xx] = 0.0;
                }
            }
        }
        let m = b.upload(&mask, &[bs, h * w])?;
        Ok(Some(over_channels(b, &m, bs, c, h * w)?.reshape(&d)?))
    }

    /// The input gradient from `dy` `[B, C, H, W]`.
    pub fn backward<B: Backend>(
        &self,
        b: &B,
        s: &DiffAugSaved<B>,
        dy: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        dy.expect_dims("diffaug backward", &s.dims)?;
        let [bs, c, h, w] = s.dims;
        let hw = h * w;
        let chw = c * hw;
        let dy = match &s.mask {
            Some(mk) => b.binary(Binary::Mul, dy, mk)?,
            None => dy.clone(),
        };
        // Contrast: dy2 = c·dy + (1 − c)·mean(dy).
        let md = b.reduce(Reduce::Mean, &dy, [bs, chw, 1])?.reshape(&[bs])?;
        let one_minus: Vec<f32> = s.con.iter().map(|v| 1.0 - v).collect();
        let md = b.bcast_affine(&md, Some(&b.upload(&one_minus, &[bs])?), None, [1, bs, 1])?;
        let dy = b.bcast_affine(
            &dy,
            Some(&b.upload(&s.con, &[bs])?),
            Some(&md),
            [1, bs, chw],
        )?;
        // Saturation: dy1 = s·dy2 + (1 − s)·mean_c(dy2).
        let mc = b.reduce(Reduce::Mean, &dy, [bs, c, hw])?;
        let one_minus: Vec<f32> = s.sat.iter().map(|v| 1.0 - v).collect();
        let mc = b.bcast_affine(&mc, Some(&b.upload(&one_minus, &[bs])?), None, [1, bs, hw])?;
        let mcb = over_channels(b, &mc, bs, c, hw)?.reshape(&s.dims)?;
        let dy = b.bcast_affine(&dy, Some(&b.upload(&s.sat, &[bs])?), None, [1, bs, chw])?;
        let dy = b.binary(Binary::Add, &dy, &mcb)?;
        // Brightness is a shift; translation's adjoint is the opposite shift.
        let mut parts = Vec::with_capacity(bs);
        for (i, &(ty, tx)) in s.shifts.iter().enumerate() {
            let di = b.slice_mid(&dy, [1, bs, chw], i, 1)?;
            parts.push(shift(b, &di, [1, c, h, w], -ty, -tx)?);
        }
        let refs: Vec<&Tensor<B>> = parts.iter().collect();
        b.concat_mid(&refs, 1, chw)?.reshape(&s.dims)
    }
}
