//! Images: decoding with errors that name the file, the ADM centre crop (§5.2), conversion
//! to and from `[3, S, S]` float tensors in `[0, 1]`, PNG export (§4.4: clamp, ×255,
//! truncate) and sample grids.
//!
//! An image file is not trusted: special files (a FIFO would block forever) are refused
//! before they are opened, the file size, the pixel count, the side and the aspect ratio
//! are checked from the header before anything is decoded, and the decoder's allocations
//! are bounded ([`image::Limits`]). Each limit that is exceeded is an error naming the file,
//! its value and the limit.

use std::io::Read;
use std::path::Path;

use image::{ImageReader, Limits, RgbImage};

use crate::errors::{io_error, CliError, CliResult};
use crate::store::atomic::write_atomic;

mod resample;
pub use resample::{pil_resize, PilFilter, PilPassOrder};

/// The largest image file read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
/// The longest side of an image read (pixels).
pub const MAX_IMAGE_SIDE: u32 = 32_768;
/// The most pixels of an image read (64 Mi: 192 MiB as RGB).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;
/// The most elongated image read, long side : short side (the centre crop of a longer one
/// would resize a strip far larger than the crop).
pub const MAX_ASPECT_RATIO: u32 = 10;
/// The most memory an image decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// The largest side of the centre crop (`--image-size`, or a decoder's `image_size`).
pub const MAX_IMAGE_SIZE: usize = 1024;

/// What a path is when it is not a regular file.
fn file_kind(md: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if md.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Reads `path` (named `what` in errors) whole, refusing anything but a regular file
/// (links resolved) before opening it, and files over `limit` bytes.
pub fn read_file_limited(path: &Path, what: &str, limit: u64) -> CliResult<Vec<u8>> {
    let cannot = |e: &std::io::Error| io_error(&format!("cannot read {what}"), path, e);
    let md = std::fs::metadata(path).map_err(|e| cannot(&e))?;
    let too_big = |n: u64| {
        CliError::new(format!(
            "{what} {} is {n} bytes; the limit is {limit} bytes",
            path.display()
        ))
    };
    if !md.is_file() {
        return Err(CliError::new(format!(
            "{what} {} is {}, not a regular file; refusing to read it",
            path.display(),
            file_kind(&md)
        )));
    }
    if md.len() > limit {
        return Err(too_big(md.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Checks the side of the centre crop: 1 to [`MAX_IMAGE_SIZE`].
pub fn check_image_size(size: usize) -> CliResult<u32> {
    if (1..=MAX_IMAGE_SIZE).contains(&size) {
        Ok(size as u32)
    } else {
        Err(CliError::new(format!(
            "image size {size} (--image-size, or the decoder's image_size): the side of the centre crop must be 1 to {MAX_IMAGE_SIZE} pixels"
        )))
    }
}

/// Checks an image's dimensions against the limits; `name` names it in the error.
pub fn check_dims(name: &str, w: u32, h: u32) -> CliResult<()> {
    let bad = |why: String| {
        Err(CliError::new(format!(
            "image {name} is {w}×{h} pixels: {why}"
        )))
    };
    let (long, short) = (w.max(h) as u64, w.min(h) as u64);
    if short == 0 {
        return bad("it has no pixels".into());
    }
    if long > MAX_IMAGE_SIDE as u64 {
        return bad(format!(
            "a side of {long} exceeds the limit of {MAX_IMAGE_SIDE}"
        ));
    }
    if long * short > MAX_IMAGE_PIXELS {
        return bad(format!(
            "{} pixels exceed the limit of {MAX_IMAGE_PIXELS}",
            long * short
        ));
    }
    if long > MAX_ASPECT_RATIO as u64 * short {
        return bad(format!(
            "the aspect ratio {}:1 exceeds the limit of {MAX_ASPECT_RATIO}:1",
            (long as f64 / short as f64 * 10.0).round() / 10.0
        ));
    }
    Ok(())
}

fn reader<'a>(bytes: &'a [u8], name: &str) -> CliResult<ImageReader<std::io::Cursor<&'a [u8]>>> {
    let mut r = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| CliError::new(format!("cannot read image {name}: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    r.limits(limits);
    Ok(r)
}

/// The dimensions of an encoded image, read from its header alone and checked against the
/// limits ([`check_dims`]).
pub fn header_dims(bytes: &[u8], name: &str) -> CliResult<(u32, u32)> {
    let (w, h) = reader(bytes, name)?.into_dimensions().map_err(|e| {
        CliError::new(format!(
            "cannot read the header of image {name}: {e} (is it a PNG or JPEG file?)"
        ))
    })?;
    check_dims(name, w, h)?;
    Ok((w, h))
}

/// Decodes an encoded PNG or JPEG to RGB after checking its header ([`header_dims`]).
pub fn decode_rgb(bytes: &[u8], name: &str) -> CliResult<RgbImage> {
    Ok(decode(bytes, name)?.to_rgb8())
}

/// Reads and decodes an image file as [`load_rgb`] does, without converting it; returns its
/// size (the data check of `train`).
pub fn check_image_file(path: &Path) -> CliResult<(u32, u32)> {
    let bytes = read_file_limited(path, "image", MAX_IMAGE_FILE_BYTES)?;
    let img = decode(&bytes, &path.display().to_string())?;
    Ok((img.width(), img.height()))
}

fn decode(bytes: &[u8], name: &str) -> CliResult<image::DynamicImage> {
    header_dims(bytes, name)?;
    let r = reader(bytes, name)?;
    // A decoder bug must not take the process down: a panic is this file's error.
    let img = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.decode()))
        .map_err(|_| CliError::new(format!("cannot decode image {name}: the decoder failed")))?
        .map_err(|e| {
            CliError::new(format!(
                "cannot decode image {name}: {e} (is it a complete PNG or JPEG file?)"
            ))
        })?;
    check_dims(name, img.width(), img.height())?;
    Ok(img)
}

/// Decodes a PNG or JPEG file to RGB ([`read_file_limited`], then [`decode_rgb`]).
pub fn load_rgb(path: &Path) -> CliResult<RgbImage> {
    let bytes = read_file_limited(path, "image", MAX_IMAGE_FILE_BYTES)?;
    decode_rgb(&bytes, &path.display().to_string())
}

/// The ADM centre crop to `s × s` (§5.2), as guided-diffusion's `center_crop_arr` computes
/// it with Pillow 7 to 12, byte for byte ([`adm_center_crop_with`] and
/// [`PilPassOrder::Classic`]). `s` must pass [`check_image_size`] and the image
/// [`check_dims`].
pub fn adm_center_crop(img: &RgbImage, s: u32) -> CliResult<RgbImage> {
    adm_center_crop_with(img, s, PilPassOrder::Classic)
}

/// The ADM centre crop to `s × s` as Pillow computes it with the pass order `order`: while
/// the short side is at least `2s`, halve both sides (rounding down) with Pillow's `BOX`
/// filter; resize to `round(side × s / short side)` (round half to even) with Pillow's
/// `BICUBIC` filter; crop the centre at `((H − s) // 2, (W − s) // 2)`.
pub fn adm_center_crop_with(img: &RgbImage, s: u32, order: PilPassOrder) -> CliResult<RgbImage> {
    let s = check_image_size(s as usize)?;
    check_dims("(in memory)", img.width(), img.height())?;
    let mut cur = std::borrow::Cow::Borrowed(img);
    // s ≥ 1, so each pass halves a short side of at least 2: at most 32 passes.
    for _ in 0..u32::BITS {
        let (w, h) = cur.dimensions();
        if w.min(h) < 2 * s {
            break;
        }
        cur = std::borrow::Cow::Owned(pil_resize(&cur, w / 2, h / 2, PilFilter::Box, order));
    }
    let scale = s as f64 / cur.width().min(cur.height()) as f64;
    // Python's round() of a float: half to even. The short side comes out as s; max(s)
    // only guards the crop below.
    let side = |n: u32| ((n as f64 * scale).round_ties_even() as u32).max(s);
    let (w2, h2) = (side(cur.width()), side(cur.height()));
    if (w2, h2) != cur.dimensions() {
        cur = std::borrow::Cow::Owned(pil_resize(&cur, w2, h2, PilFilter::Bicubic, order));
    }
    let (x0, y0) = ((cur.width() - s) / 2, (cur.height() - s) / 2);
    Ok(image::imageops::crop_imm(cur.as_ref(), x0, y0, s, s).to_image())
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
    let s = check_image_size(size)?;
    Ok(to_chw(&adm_center_crop(&load_rgb(path)?, s)?, flip))
}

/// Image files, unflipped, as one `[n, 3, size, size]` batch.
pub fn load_chw_files(files: &[std::path::PathBuf], size: usize) -> CliResult<Vec<f32>> {
    check_image_size(size)?;
    let values = files.len().saturating_mul(3 * size * size);
    let mut out = Vec::new();
    out.try_reserve_exact(values).map_err(|_| {
        CliError::new(format!(
            "{} images of {size}×{size} pixels do not fit in memory ({values} values)",
            files.len()
        ))
    })?;
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
