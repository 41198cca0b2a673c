//! `encode`, `decode` and `reconstruct`: images ↔ latents through a RAE (§7.1, §7.2).

use std::path::{Path, PathBuf};

use rae_core::metrics::psnr;
use rae_core::Backend;

use super::generate::decode_images;
use crate::backends::Job;
use crate::cli::{DecodeArgs, EncodeArgs, RaeArgs, ReconstructArgs};
use crate::data::loader::{default_workers, with_loader, Images, ItemSource, DEFAULT_AHEAD};
use crate::data::{Dataset, ImageFolder};
use crate::errors::{CliError, CliResult};
use crate::image_io::{grid, load_chw, load_chw_files, save_png, to_chw};
use crate::store::shards::DEFAULT_SHARD_SIZE;
use crate::store::{
    check_writable_dir, is_shard_dir, load_rae, load_tensor_file, save_latents, LatentDtype,
    ShardSpec, ShardWriter,
};

fn rae_for<B: Backend>(b: &B, r: &RaeArgs) -> CliResult<rae_core::models::Rae<B>> {
    let paths = crate::config::resolve_rae(r, Some(Path::new("runs/default/rae")))?;
    load_rae(b, &paths)
}

/// The `encode` command: images through the RAE encoder, batch by batch (the images
/// decoded ahead by `--workers` threads), into one safetensors file or a sharded cache.
#[derive(Debug)]
pub struct EncodeJob(pub EncodeArgs);

/// Image files given on the command line, as loader items (label 0).
struct FileList<'a> {
    files: &'a [PathBuf],
    size: usize,
}

impl ItemSource for FileList<'_> {
    fn item_len(&self) -> usize {
        3 * self.size * self.size
    }
    fn item_label(&self, _i: usize) -> u32 {
        0
    }
    fn load_item(&self, i: usize, flip: bool) -> CliResult<Vec<f32>> {
        load_chw(&self.files[i], self.size, flip)
    }
}

/// Where encoded latents go.
enum Sink {
    Memory(Vec<f32>, Vec<i64>),
    Shards(ShardWriter),
}

impl Job for EncodeJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        let sharded = is_shard_dir(&a.out);
        let dtype = LatentDtype::parse(&a.latent_dtype)?;
        if !sharded && (a.shard_size.is_some() || dtype != LatentDtype::F32) {
            return Err(CliError::new(format!(
                "--shard-size and --latent-dtype bf16 make a sharded cache, a folder: {} ends \
                 in .safetensors (give a folder path instead)",
                a.out.display()
            )));
        }
        let rae = rae_for(b, &a.rae)?;
        let size = a.data.image_size.unwrap_or(rae.decoder.config.image_size);
        crate::image_io::check_image_size(size)?;
        let folder;
        let images;
        let files;
        let (src, n, classes): (&dyn ItemSource, usize, Vec<String>) =
            match (&a.data.data, a.images.is_empty()) {
                (Some(dir), true) => {
                    folder = ImageFolder::open_indexed(dir, size, a.data.class_index.as_deref())?;
                    images = Images(&folder);
                    (&images, folder.len(), folder.classes().to_vec())
                }
                (None, false) => {
                    files = FileList {
                        files: &a.images,
                        size,
                    };
                    (&files, a.images.len(), vec![])
                }
                _ => {
                    return Err(CliError::new(
                        "encode: give either --data DIR or image files",
                    ))
                }
            };
        let [c, h, w] = rae.latent_dims();
        let normalized = rae.stats.is_some();
        let mut sink = if sharded {
            Sink::Shards(ShardWriter::create(
                &a.out,
                ShardSpec {
                    dims: [c, h, w],
                    dtype,
                    shard_size: a.shard_size.unwrap_or(DEFAULT_SHARD_SIZE),
                    normalized,
                    classes: classes.clone(),
                },
            )?)
        } else {
            Sink::Memory(Vec::new(), Vec::new())
        };
        let bs = a.batch_size.max(1);
        let steps = n.div_ceil(bs) as u64;
        let workers = a.data.workers.unwrap_or_else(default_workers);
        let plan = move |step: u64| {
            let first = step as usize * bs;
            (first..(first + bs).min(n)).map(|i| (i, false)).collect()
        };
        let pb = crate::progress::bar(steps, "encode");
        with_loader(src, workers, DEFAULT_AHEAD, steps, plan, |loader| {
            for step in 0..steps {
                let (imgs, labels) = loader.batch(step)?;
                let m = labels.len();
                let x = b.upload(&imgs, &[m, 3, size, size])?;
                let z = b.download(&rae.encode(b, &x)?)?;
                let labels: Vec<i64> = labels.into_iter().map(i64::from).collect();
                match &mut sink {
                    Sink::Memory(lat, lab) => {
                        lat.extend(z);
                        lab.extend(labels);
                    }
                    Sink::Shards(wr) => wr.push(&z, &labels)?,
                }
                pb.inc(1);
            }
            CliResult::Ok(())
        })?;
        pb.finish_and_clear();
        let what = match sink {
            Sink::Memory(latents, labels) => {
                let classes_json =
                    rae_core::json::JsonValue::array(classes.iter().map(String::as_str))
                        .to_json_string()?;
                save_latents(
                    &a.out,
                    &[n, c, h, w],
                    &latents,
                    &labels,
                    normalized,
                    &[
                        ("num_classes".to_string(), classes.len().max(1).to_string()),
                        ("classes".to_string(), classes_json),
                    ],
                )?;
                String::from("one file")
            }
            Sink::Shards(wr) => {
                let ix = wr.finish()?;
                format!("{} shards of {}", ix.shards.len(), ix.dtype.name())
            }
        };
        eprintln!(
            "encoded {n} images to latents {:?} ({}, {what}) -> {}",
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
