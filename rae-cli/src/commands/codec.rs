//! `encode`, `decode` and `reconstruct`: images ↔ latents through a RAE (§7.1, §7.2).

use std::path::Path;

use rae_core::metrics::psnr;
use rae_core::Backend;

use super::generate::decode_images;
use crate::backends::Job;
use crate::cli::{DecodeArgs, EncodeArgs, RaeArgs, ReconstructArgs};
use crate::data::{load_batch, Dataset, ImageFolder};
use crate::errors::{CliError, CliResult};
use crate::image_io::{grid, load_chw_files, save_png, to_chw};
use crate::store::{check_writable_dir, load_rae, load_tensor_file, save_latents};

fn rae_for<B: Backend>(b: &B, r: &RaeArgs) -> CliResult<rae_core::models::Rae<B>> {
    let paths = crate::config::resolve_rae(r, Some(Path::new("runs/default/rae")))?;
    load_rae(b, &paths)
}

/// The `encode` command.
#[derive(Debug)]
pub struct EncodeJob(pub EncodeArgs);

impl Job for EncodeJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        let rae = rae_for(b, &a.rae)?;
        let size = a.data.image_size.unwrap_or(rae.decoder.config.image_size);
        let (images, labels, classes): (Vec<f32>, Vec<i64>, Vec<String>) =
            match (&a.data.data, a.images.is_empty()) {
                (Some(dir), true) => {
                    let ds = ImageFolder::open(dir, size)?;
                    let items: Vec<(usize, bool)> = (0..ds.len()).map(|i| (i, false)).collect();
                    let (imgs, labels) = load_batch(&ds, &items)?;
                    (
                        imgs,
                        labels.into_iter().map(i64::from).collect(),
                        ds.classes().to_vec(),
                    )
                }
                (None, false) => (
                    load_chw_files(&a.images, size)?,
                    vec![0; a.images.len()],
                    vec![],
                ),
                _ => {
                    return Err(CliError::new(
                        "encode: give either --data DIR or image files",
                    ))
                }
            };
        let n = labels.len();
        let per = 3 * size * size;
        let [c, h, w] = rae.latent_dims();
        let mut latents = Vec::with_capacity(n * c * h * w);
        for start in (0..n).step_by(a.batch_size.max(1)) {
            let m = a.batch_size.max(1).min(n - start);
            let x = b.upload(&images[start * per..(start + m) * per], &[m, 3, size, size])?;
            latents.extend(b.download(&rae.encode(b, &x)?)?);
        }
        let shape = [n, c, h, w];
        let normalized = rae.stats.is_some();
        let classes_json = rae_core::json::JsonValue::array(classes.iter().map(String::as_str))
            .to_json_string()?;
        save_latents(
            &a.out,
            &shape,
            &latents,
            &labels,
            normalized,
            &[
                ("num_classes".to_string(), classes.len().max(1).to_string()),
                ("classes".to_string(), classes_json),
            ],
        )?;
        eprintln!(
            "encoded {n} images to latents {:?} ({}) -> {}",
            [c, h, w],
            if normalized {
                "normalised"
            } else {
                "not normalised"
            },
            a.out.display()
        );
        Ok(())
    }
}

/// The `decode` command.
#[derive(Debug)]
pub struct DecodeJob(pub DecodeArgs);

impl Job for DecodeJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        let rae = rae_for(b, &a.rae)?;
        let f = load_tensor_file(&a.latents)?;
        let lat = f.tensors.get("latents").ok_or_else(|| {
            CliError::new(format!("{} has no tensor \"latents\"", a.latents.display()))
        })?;
        let want = rae.latent_dims();
        if lat.shape.len() != 4 || lat.shape[1..] != want {
            return Err(CliError::new(format!(
                "{}: latents have shape {:?} but this RAE decodes [N, {}, {}, {}]",
                a.latents.display(),
                lat.shape,
                want[0],
                want[1],
                want[2]
            )));
        }
        let z = b.upload(&lat.data, &lat.shape)?;
        let imgs = decode_images(b, &rae, &z)?;
        write_images(&a.out, &imgs)?;
        eprintln!("decoded {} latents -> {}", imgs.len(), a.out.display());
        Ok(())
    }
}

fn write_images(out: &Path, imgs: &[image::RgbImage]) -> CliResult<()> {
    check_writable_dir(out)?;
    for (i, img) in imgs.iter().enumerate() {
        save_png(&out.join(format!("{i:06}.png")), img)?;
    }
    save_png(
        &out.join("grid.png"),
        &grid(imgs, (imgs.len() as f64).sqrt().ceil() as usize),
    )
}

/// The `reconstruct` command.
#[derive(Debug)]
pub struct ReconstructJob(pub ReconstructArgs);

impl Job for ReconstructJob {
    type Output = Vec<f64>;
    fn run<B: Backend>(self, b: &B) -> CliResult<Vec<f64>> {
        let a = self.0;
        if a.images.is_empty() {
            return Err(CliError::new("reconstruct: give image files"));
        }
        let rae = rae_for(b, &a.rae)?;
        let size = rae.decoder.config.image_size;
        let images = load_chw_files(&a.images, size)?;
        let n = a.images.len();
        let x = b.upload(&images, &[n, 3, size, size])?;
        let z = rae.encode(b, &x)?;
        let imgs = decode_images(b, &rae, &z)?;
        let per = 3 * size * size;
        let mut scores = Vec::new();
        for (i, img) in imgs.iter().enumerate() {
            let rec = to_chw(img, false);
            let p = psnr(&images[i * per..(i + 1) * per], &rec)?;
            eprintln!("{}: PSNR {p:.2} dB", a.images[i].display());
            scores.push(p);
        }
        write_images(&a.out, &imgs)?;
        Ok(scores)
    }
}
