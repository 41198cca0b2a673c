//! Images: decoding with errors that name the file, the ADM centre crop (§5.2), conversion
//! to and from `[3, S, S]` float tensors in `[0, 1]`, PNG export (§4.4: clamp, ×255,
//! truncate) and sample grids.

use std::path::Path;

use image::{ImageReader, RgbImage};
use rae_core::nn::tables::bicubic_aa_matrix;

use crate::ckpt::write_atomic;
use crate::errors::{io_error, CliError, CliResult};

/// Decodes a PNG or JPEG file to RGB.
pub fn load_rgb(path: &Path) -> CliResult<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| io_error("cannot read image", path, &e))?;
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| CliError::new(format!("cannot read image {}: {e}", path.display())))?;
    let img = reader.decode().map_err(|e| {
        CliError::new(format!(
            "cannot decode image {}: {e} (is it a complete PNG or JPEG file?)",
            path.display()
        ))
    })?;
    Ok(img.to_rgb8())
}

/// Halves both sides with a 2×2 box filter (PIL `BOX` for an exact halving).
fn box_halve(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() / 2, img.height() / 2);
    let mut out = RgbImage::new(w.max(1), h.max(1));
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0u32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = img.get_pixel(2 * x + dx, 2 * y + dy);
                for c in 0..3 {
                    acc[c] += p[c] as u32;
                }
            }
            out.put_pixel(
                x,
                y,
                image::Rgb([0, 1, 2].map(|c| ((acc[c] + 2) / 4) as u8)),
            );
        }
    }
    out
}

/// Antialiased bicubic resize (Keys a = −0.5, PIL's `BICUBIC`) in f32, rounded to u8.
fn resize_bicubic_u8(img: &RgbImage, w2: u32, h2: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (w2u, h2u) = (w2 as usize, h2 as usize);
    let mw = bicubic_aa_matrix(w, w2u);
    let mh = bicubic_aa_matrix(h, h2u);
    // Along width.
    let mut tmp = vec![0.0f32; h * w2u * 3];
    for y in 0..h {
        for x2 in 0..w2u {
            for c in 0..3 {
                let mut acc = 0.0f32;
                for x in 0..w {
                    let wt = mw[x2 * w + x];
                    if wt != 0.0 {
                        acc += wt * img.get_pixel(x as u32, y as u32)[c] as f32;
                    }
                }
                tmp[(y * w2u + x2) * 3 + c] = acc;
            }
        }
    }
    let mut out = RgbImage::new(w2, h2);
    for y2 in 0..h2u {
        for x2 in 0..w2u {
            let mut px = [0u8; 3];
            for c in 0..3 {
                let mut acc = 0.0f32;
                for y in 0..h {
                    let wt = mh[y2 * h + y];
                    if wt != 0.0 {
                        acc += wt * tmp[(y * w2u + x2) * 3 + c];
                    }
                }
                px[c] = acc.round().clamp(0.0, 255.0) as u8;
            }
            out.put_pixel(x2 as u32, y2 as u32, image::Rgb(px));
        }
    }
    out
}

/// Python's round-half-to-even of a non-negative value.
fn round_half_even(x: f64) -> u32 {
    let f = x.floor();
    let d = x - f;
    let r = if d > 0.5 || (d == 0.5 && (f as u64) % 2 == 1) {
        f + 1.0
    } else {
        f
    };
    r as u32
}

/// The ADM centre crop to `s × s` (§5.2): box-halve while the short side is at least `2s`,
/// bicubic-resize the short side to `s`, crop the centre.
pub fn adm_center_crop(img: &RgbImage, s: u32) -> RgbImage {
    let mut img = img.clone();
    while img.width().min(img.height()) >= 2 * s {
        img = box_halve(&img);
    }
    let scale = s as f64 / img.width().min(img.height()) as f64;
    let (w2, h2) = (
        round_half_even(img.width() as f64 * scale).max(s),
        round_half_even(img.height() as f64 * scale).max(s),
    );
    if (w2, h2) != (img.width(), img.height()) {
        img = resize_bicubic_u8(&img, w2, h2);
    }
    let (x0, y0) = ((img.width() - s) / 2, (img.height() - s) / 2);
    image::imageops::crop_imm(&img, x0, y0, s, s).to_image()
}

/// An RGB image → `[3, H, W]` values `k/255`, optionally flipped horizontally.
pub fn to_chw(img: &RgbImage, flip: bool) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0.0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        let xx = if flip { w - 1 - x as usize } else { x as usize };
        for c in 0..3 {
            out[(c * h + y as usize) * w + xx] = p[c] as f32 / 255.0;
        }
    }
    out
}

/// Whether a path names an image this tool reads (PNG or JPEG, by extension).
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// An image file as the model sees it: ADM centre crop to `size`, `[3, size, size]` in [0, 1]
/// (mirrored when `flip`).
pub fn load_chw(path: &Path, size: usize, flip: bool) -> CliResult<Vec<f32>> {
    Ok(to_chw(
        &adm_center_crop(&load_rgb(path)?, size as u32),
        flip,
    ))
}

/// Image files, unflipped, as one `[n, 3, size, size]` batch.
pub fn load_chw_files(files: &[std::path::PathBuf], size: usize) -> CliResult<Vec<f32>> {
    let mut out = Vec::with_capacity(files.len() * 3 * size * size);
    for f in files {
        out.extend(load_chw(f, size, false)?);
    }
    Ok(out)
}

/// `[3, H, W]` values in `[0, 1]` scale → an RGB image: clamp to `[0, 1]`, ×255, truncate
/// (§4.4).
pub fn from_chw(data: &[f32], h: usize, w: usize) -> RgbImage {
    let mut img = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = [0, 1, 2].map(|c| {
                let v = data[(c * h + y) * w + x];
                let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                (v * 255.0) as u8
            });
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    img
}

/// Encodes an image as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> CliResult<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| CliError::new(format!("cannot encode PNG: {e}")))?;
    Ok(out)
}

/// Writes a PNG atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> CliResult<()> {
    write_atomic(path, &png_bytes(img)?)
}

/// Tiles equally sized images into a grid of `cols` columns with a 2-pixel gap.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    let (w, h) = images.first().map_or((1, 1), |i| (i.width(), i.height()));
    let rows = images.len().div_ceil(cols).max(1);
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (w + gap) + gap,
        rows as u32 * (h + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        image::imageops::replace(
            &mut out,
            img,
            (gap + c * (w + gap)) as i64,
            (gap + r * (h + gap)) as i64,
        );
    }
    out
}
