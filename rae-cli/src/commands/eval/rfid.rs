//! `eval DIR --reconstruct --inception W`: the rFID of §6.2. Each image of the folder
//! (ADM centre crop to `--image-size`) is reconstructed through the RAE and exported as
//! 8-bit (§4.4); Inception runs on the inputs and on the reconstructions in the same pass,
//! and the reconstructions are scored against the inputs (rFID, and any other Inception
//! metric asked), with PSNR and SSIM of each pair.

use std::path::Path;

use rae_core::json::JsonValue;
use rae_core::metrics::{psnr, ssim};
use rae_core::models::Rae;
use rae_core::Backend;

use super::inception::{score, Accumulator, Features, Metric, Reference};
use super::{list_images, reconstruct_images, Summary};
use crate::errors::CliResult;
use crate::image_io::{adm_center_crop, check_image_size, load_rgb, to_chw};

/// Reconstructs the images under `images` at `size` and returns the metrics of `metrics`
/// (Inception ones of the reconstructions against the inputs; `psnr_db` and `ssim` as
/// mean/min/max) with `count` and `reference`.
pub fn evaluate_rfid<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    fx: &mut dyn Features,
    images: &Path,
    metrics: &[Metric],
    size: usize,
    bs: usize,
) -> CliResult<Vec<(String, JsonValue)>> {
    let s = check_image_size(size)?;
    let files = list_images(images)?;
    let dims = fx.dims();
    let (mut inputs, mut recs) = (Accumulator::new(dims), Accumulator::new(dims));
    let (mut psnrs, mut ssims) = (Vec::new(), Vec::new());
    let inception = metrics.iter().any(|m| m.needs_inception());
    let per = 3 * size * size;
    let pb = crate::progress::bar(files.len() as u64, "rfid");
    for chunk in files.chunks(bs.max(1)) {
        let mut orig = Vec::with_capacity(chunk.len());
        for p in chunk {
            orig.push(adm_center_crop(&load_rgb(p)?, s)?);
        }
        let x: Vec<f32> = orig.iter().flat_map(|i| to_chw(i, false)).collect();
        let rec = reconstruct_images(b, rae, &x, size)?;
        for (i, r) in rec.iter().enumerate() {
            let y = to_chw(r, false);
            let xi = &x[i * per..(i + 1) * per];
            psnrs.push(psnr(&y, xi)?);
            ssims.push(ssim(&y, xi, [3, size, size])?);
        }
        if inception {
            let raw = |v: &[image::RgbImage]| -> Vec<u8> {
                v.iter().flat_map(|i| i.as_raw().iter().copied()).collect()
            };
            inputs.extract(fx, &raw(&orig), chunk.len(), size, size)?;
            recs.extract(fx, &raw(&rec), chunk.len(), size, size)?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let mut out: Vec<(String, JsonValue)> = if inception {
        let (r, x) = (recs.finish()?, inputs.finish()?);
        let name = images.display().to_string();
        let im: Vec<Metric> = metrics
            .iter()
            .copied()
            .filter(|m| m.needs_inception())
            .collect();
        score(fx, &r, Some(Reference::Gathered(&x, name)), &im)?
    } else {
        vec![
            ("count".into(), files.len().into()),
            ("reference".into(), images.display().to_string().into()),
        ]
    };
    let summary = |v: &[f64]| Summary::of(v).map_or(JsonValue::Null, |s| s.json());
    if metrics.contains(&Metric::Psnr) {
        out.push(("psnr_db".into(), summary(&psnrs)));
    }
    if metrics.contains(&Metric::Ssim) {
        out.push(("ssim".into(), summary(&ssims)));
    }
    out.push(("pairing".into(), "reconstructed".into()));
    Ok(out)
}
