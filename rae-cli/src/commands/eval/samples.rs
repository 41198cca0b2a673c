//! Inception metrics of images held in memory: `sample --eval-ref` scores each decoded
//! batch as it is made (the uint8 pixels a PNG would hold), so no sample is written to be
//! evaluated; and the shared printing of metric results.

use std::path::Path;

use image::RgbImage;
use rae_core::json::JsonValue;

use super::inception::{score, Accumulator, Features, Metric, Reference};
use crate::errors::{CliError, CliResult};
use crate::store::write_atomic;

/// Adds the Inception features of `imgs` (all of one size) to `acc`, `bs` images per
/// extractor call.
pub fn push_images(
    fx: &mut dyn Features,
    acc: &mut Accumulator,
    imgs: &[RgbImage],
    bs: usize,
) -> CliResult<()> {
    for chunk in imgs.chunks(bs.max(1)) {
        let (w, h) = chunk[0].dimensions();
        let mut px = Vec::with_capacity(chunk.len() * (w * h * 3) as usize);
        for img in chunk {
            if img.dimensions() != (w, h) {
                return Err(CliError::new(
                    "the images of one Inception batch differ in size",
                ));
            }
            px.extend_from_slice(img.as_raw());
        }
        acc.extract(fx, &px, chunk.len(), h as usize, w as usize)?;
    }
    Ok(())
}

/// The metrics of `acc`'s images against `reference` (an ADM `.npz`, a `--save-stats`
/// file, or a folder centre-cropped to `size`).
pub fn finish_against(
    fx: &mut dyn Features,
    acc: Accumulator,
    reference: &Path,
    metrics: &[Metric],
    size: usize,
    bs: usize,
) -> CliResult<Vec<(String, JsonValue)>> {
    let set = acc.finish()?;
    let r = Reference::Path {
        path: reference,
        size,
        bs,
    };
    score(fx, &set, Some(r), metrics)
}

/// Prints one line per result and writes them to `json` as one object.
pub fn report(results: &[(String, JsonValue)], json: Option<&Path>) -> CliResult<()> {
    for (k, v) in results {
        println!("{k}: {}", v.to_json_string()?);
    }
    if let Some(path) = json {
        let text = JsonValue::object(results.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .to_json_pretty()?;
        write_atomic(path, text.as_bytes())?;
        eprintln!("results -> {}", path.display());
    }
    Ok(())
}
