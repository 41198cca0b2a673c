//! The input handling of the FID Inception (torch-fidelity's `inception-v3-compat`): uint8
//! images to f32, TensorFlow 1.x bilinear resize to 299×299 (`align_corners=False`, no half
//! pixel centres: torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`, its exact
//! "slow" path), then `(x − 128)/128`. Host-side f32, written to round like PyTorch's CPU
//! kernels of that function, operation for operation.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Source taps of one output axis: for each output index, the low and high input index and
/// the fraction `d` of the high one.
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    // scale = in/out in double precision, then rounded to f32 (`torch.tensor(scale, f32)`);
    // the grid is `arange(out)` (f32) times that scale, in f32.
    let scale = (input as f64 / output as f64) as f32;
    (0..output)
        .map(|i| {
            let g = i as f32 * scale;
            let lo = (g as usize).min(input - 1);
            let hi = (lo + 1).min(input - 1);
            (lo, hi, g - lo as f32)
        })
        .collect()
}

/// TF1 bilinear resize of `planes` row-major `h×w` planes to `oh×ow`:
/// `in_0 = a + (b − a)·dx` on the low row, `in_1` likewise on the high row, then
/// `in_0 + (in_1 − in_0)·dy` (each product and sum rounded to f32 separately, no FMA).
pub fn resize_bilinear_tf1(
    src: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<Vec<f32>> {
    if h == 0 || w == 0 || oh == 0 || ow == 0 || src.len() != planes * h * w {
        return Err(Error::invalid(
            "TF1 bilinear resize",
            alloc::format!(
                "{} values for {planes} planes of {h}×{w} (to {oh}×{ow})",
                src.len()
            ),
        ));
    }
    let tx = taps(w, ow);
    let ty = taps(h, oh);
    let mut out = vec![0f32; planes * oh * ow];
    for (p, dst) in out.chunks_exact_mut(oh * ow).enumerate() {
        let plane = &src[p * h * w..(p + 1) * h * w];
        for (oy, &(ylo, yhi, dy)) in ty.iter().enumerate() {
            let r0 = &plane[ylo * w..(ylo + 1) * w];
            let r1 = &plane[yhi * w..(yhi + 1) * w];
            for (ox, &(xlo, xhi, dx)) in tx.iter().enumerate() {
                let in0 = r0[xlo] + (r0[xhi] - r0[xlo]) * dx;
                let in1 = r1[xlo] + (r1[xhi] - r1[xlo]) * dx;
                dst[oy * ow + ox] = in0 + (in1 - in0) * dy;
            }
        }
    }
    Ok(out)
}

/// The extractor's input: uint8 images `[n, 3, h, w]` (row-major) → f32 `[n, 3, side, side]`
/// resized with [`resize_bilinear_tf1`] and mapped to `(x − 128)/128`.
pub fn preprocess_u8(
    images: &[u8],
    n: usize,
    (h, w): (usize, usize),
    side: usize,
) -> Result<Vec<f32>> {
    if images.len() != n * 3 * h * w {
        return Err(Error::invalid(
            "Inception input",
            alloc::format!(
                "{} bytes for {n} RGB images of {h}×{w} ({} expected)",
                images.len(),
                n * 3 * h * w
            ),
        ));
    }
    let x: Vec<f32> = images.iter().map(|&v| f32::from(v)).collect();
    let mut y = if (h, w) == (side, side) {
        x
    } else {
        resize_bilinear_tf1(&x, n * 3, (h, w), (side, side))?
    };
    for v in &mut y {
        *v = (*v - 128.0) / 128.0;
    }
    Ok(y)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear_tf1(&src, 1, (3, 4), (3, 4)).unwrap(), src);
    }

    #[test]
    fn upsampling_by_two_follows_tf1() {
        // TF1 (no half-pixel centres): out[i] = in[i/2] with the last sample repeated.
        let src = [0.0, 10.0];
        let y = resize_bilinear_tf1(&src, 1, (1, 2), (1, 4)).unwrap();
        assert_eq!(y, [0.0, 5.0, 10.0, 10.0]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(preprocess_u8(&[0u8; 10], 1, (2, 2), 299).is_err());
        assert!(resize_bilinear_tf1(&[], 0, (0, 2), (2, 2)).is_err());
    }
}
