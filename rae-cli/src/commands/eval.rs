//! `rae-cli eval`: the Fréchet distance between two image sets on features of the RAE's
//! frozen encoder (the FID formula of §6.1 with the encoder's mean-pooled tokens, taken
//! before the latent normalisation, in place of Inception features), and PSNR / SSIM of
//! reconstructions against their originals (§6.2).
//!
//! * `eval A B`: FD between the images of folders `A` and `B` (PNG/JPEG, searched
//!   recursively; e.g. samples against a data folder).
//! * `eval A B --reconstruct`: `A` holds reconstructions of `B`; also PSNR and SSIM of each
//!   pair, paired by relative file name (extension ignored), else by sorted order.
//! * `eval A --reconstruct`: reconstructs `A` through the RAE (8-bit, as exported, §4.4)
//!   and reports FD, PSNR and SSIM of the reconstructions against `A` (an rFID-style check).
//! * `--metrics fid,is,sfid,kid,prec,recall`: the Inception metrics of §6.1 ([`inception`]).
//! * `eval A --reconstruct --inception W [--metrics fid,psnr,ssim]`: the rFID of §6.2 with
//!   PSNR and SSIM in one pass ([`rfid`]).

pub mod extractor;
pub mod inception;
pub mod rfid;
pub mod samples;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::metrics::{frechet_distance, psnr, ssim, Moments};
use rae_core::models::Rae;
use rae_core::Backend;

use crate::backends::Job;
use crate::cli::EvalArgs;
use crate::errors::{io_error, CliError, CliResult};
use crate::image_io::{from_chw, is_image, load_chw_files, to_chw};
use crate::progress::bar;
use crate::store::{load_rae, write_atomic};
use extractor::InceptionFeatures;
use inception::Metric;

/// Mean, minimum and maximum of a per-image score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Mean over the pairs.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        Some(Summary {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    fn json(&self) -> JsonValue {
        let num = |x: f64| {
            if x.is_finite() {
                JsonValue::from(x)
            } else {
                JsonValue::Null
            }
        };
        JsonValue::object([
            ("mean", num(self.mean)),
            ("min", num(self.min)),
            ("max", num(self.max)),
        ])
    }
}

/// How reconstructions were matched with their originals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Same relative file name (extension ignored).
    Name,
    /// Sorted order (the names differ).
    Order,
    /// Reconstructed here from the images themselves.
    Reconstructed,
}

/// What `eval` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Fréchet distance between the two feature distributions.
    pub fd: f64,
    /// Feature width (the encoder's token width).
    pub feature_dim: usize,
    /// Images in the scored set.
    pub count: usize,
    /// Images in the reference set (or reconstructions made).
    pub reference_count: usize,
    /// PSNR in dB over the pairs (with `--reconstruct`; `+∞` for identical images).
    pub psnr: Option<Summary>,
    /// SSIM over the pairs (with `--reconstruct`).
    pub ssim: Option<Summary>,
    /// How the pairs were made (with `--reconstruct`).
    pub pairing: Option<Pairing>,
}

impl EvalReport {
    /// The report as JSON (non-finite numbers as `null`).
    pub fn to_json(&self, a: &Path, b: Option<&Path>) -> JsonValue {
        let mut m: Vec<(&str, JsonValue)> = vec![
            (
                "fd",
                if self.fd.is_finite() {
                    self.fd.into()
                } else {
                    JsonValue::Null
                },
            ),
            (
                "feature",
                format!(
                    "RAE encoder tokens, mean-pooled, before latent normalisation ({} values)",
                    self.feature_dim
                )
                .into(),
            ),
            ("feature_dim", self.feature_dim.into()),
            ("images", a.display().to_string().into()),
            ("count", self.count.into()),
            (
                "reference",
                b.map_or(JsonValue::Null, |p| p.display().to_string().into()),
            ),
            ("reference_count", self.reference_count.into()),
        ];
        if let Some(p) = &self.psnr {
            m.push(("psnr_db", p.json()));
        }
        if let Some(s) = &self.ssim {
            m.push(("ssim", s.json()));
        }
        if let Some(p) = self.pairing {
            m.push((
                "pairing",
                match p {
                    Pairing::Name => "name",
                    Pairing::Order => "order",
                    Pairing::Reconstructed => "reconstructed",
                }
                .into(),
            ));
        }
        JsonValue::object(m)
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> CliResult<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_error("cannot open the folder", dir, &e))?;
    for e in rd {
        let p = e
            .map_err(|e| io_error("cannot list the folder", dir, &e))?
            .path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The PNG/JPEG files under `dir` (recursively), sorted; a single image file is a set of
/// one. An error names a missing or image-less folder.
pub fn list_images(dir: &Path) -> CliResult<Vec<PathBuf>> {
    if dir.is_file() && is_image(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(CliError::new(format!(
            "{} holds no PNG or JPEG images",
            dir.display()
        )));
    }
    Ok(out)
}

fn key(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .with_extension("")
        .to_string_lossy()
        .into_owned()
}

/// Pairs each image of `a` (under `ra`) with one of `b` (under `rb`): by relative name
/// without extension when every name matches, else by sorted order when the counts agree.
pub fn pair_files(
    a: &[PathBuf],
    ra: &Path,
    b: &[PathBuf],
    rb: &Path,
) -> CliResult<(Vec<(usize, usize)>, Pairing)> {
    let names: BTreeMap<String, usize> =
        b.iter().enumerate().map(|(i, p)| (key(rb, p), i)).collect();
    let by_name: Option<Vec<(usize, usize)>> = a
        .iter()
        .enumerate()
        .map(|(i, p)| names.get(&key(ra, p)).map(|&j| (i, j)))
        .collect();
    match by_name {
        Some(p) if a.len() == b.len() => Ok((p, Pairing::Name)),
        _ if a.len() == b.len() => Ok(((0..a.len()).map(|i| (i, i)).collect(), Pairing::Order)),
        _ => Err(CliError::new(format!(
            "--reconstruct: {} has {} images and {} has {}; their names do not match, so they cannot be paired",
            ra.display(),
            a.len(),
            rb.display(),
            b.len()
        ))),
    }
}

/// Encoder features of images `[n, 3, S, S]`: tokens mean-pooled over positions, `[n, C]`.
pub fn features<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    images: &[f32],
    size: usize,
) -> CliResult<Vec<f32>> {
    let n = images.len() / (3 * size * size);
    let x = b.upload(images, &[n, 3, size, size])?;
    let t = rae.encode_tokens(b, &x)?;
    let d = t.dims().to_vec();
    let host = b.download(&t)?;
    let (tokens, c) = (d[1], d[2]);
    let mut out = vec![0.0f32; n * c];
    for i in 0..n {
        for k in 0..tokens {
            for j in 0..c {
                out[i * c + j] += host[(i * tokens + k) * c + j];
            }
        }
    }
    out.iter_mut().for_each(|v| *v /= tokens as f32);
    Ok(out)
}

/// Images → RAE reconstructions as exported (clamp, ×255, truncate; §4.4), `[n, 3, S, S]`.
fn reconstruct<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    images: &[f32],
    size: usize,
) -> CliResult<Vec<f32>> {
    Ok(reconstruct_images(b, rae, images, size)?
        .iter()
        .flat_map(|i| to_chw(i, false))
        .collect())
}

/// Images `[n, 3, S, S]` → their RAE reconstructions as 8-bit images (§4.4).
pub fn reconstruct_images<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    images: &[f32],
    size: usize,
) -> CliResult<Vec<image::RgbImage>> {
    let n = images.len() / (3 * size * size);
    let x = b.upload(images, &[n, 3, size, size])?;
    let img = rae.decode(b, &rae.encode(b, &x)?)?;
    let d = img.dims().to_vec();
    if d[2] != size || d[3] != size {
        return Err(CliError::new(format!(
            "the decoder makes {}×{} images but the evaluation uses {size}×{size}: pass --image-size {}",
            d[2], d[3], d[2]
        )));
    }
    let host = b.download(&img)?;
    let per = 3 * size * size;
    Ok((0..n)
        .map(|i| from_chw(&host[i * per..(i + 1) * per], size, size))
        .collect())
}

fn moments_of(v: &Moments) -> CliResult<(Vec<f64>, Vec<f64>)> {
    Ok((v.mean().to_vec(), v.covariance()?))
}

/// Runs the evaluation on an already loaded RAE.
pub fn evaluate<B: Backend>(b: &B, rae: &Rae<B>, a: &EvalArgs) -> CliResult<EvalReport> {
    let size = a.image_size.unwrap_or(rae.decoder.config.image_size);
    let bs = a.batch_size.max(1);
    let set_a = list_images(&a.images)?;
    let set_b = match &a.reference {
        Some(r) => Some(list_images(r)?),
        None if a.reconstruct => None,
        None => {
            return Err(CliError::new(
                "eval: give a reference folder to compare with, or --reconstruct to score reconstructions of the images",
            ))
        }
    };
    let pairs = match (&set_b, a.reconstruct, &a.reference) {
        (Some(sb), true, Some(rb)) => Some(pair_files(&set_a, &a.images, sb, rb)?),
        _ => None,
    };
    let c = rae.encoder.hidden_size();
    let (mut ma, mut mb) = (Moments::new(c), Moments::new(c));
    let (mut psnrs, mut ssims) = (Vec::new(), Vec::new());
    let total = set_a.len() + set_b.as_ref().map_or(0, Vec::len);
    let pb = bar(total as u64, "eval");
    let per = 3 * size * size;
    let mut score = |x: &[f32], y: &[f32]| -> CliResult<()> {
        psnrs.push(psnr(x, y)?);
        ssims.push(ssim(x, y, [3, size, size])?);
        Ok(())
    };
    for chunk in set_a.chunks(bs) {
        let imgs = load_chw_files(chunk, size)?;
        ma.push_rows(&features(b, rae, &imgs, size)?)?;
        if set_b.is_none() {
            // Reconstruct and score against the originals.
            let rec = reconstruct(b, rae, &imgs, size)?;
            mb.push_rows(&features(b, rae, &rec, size)?)?;
            for i in 0..chunk.len() {
                score(&rec[i * per..(i + 1) * per], &imgs[i * per..(i + 1) * per])?;
            }
        }
        pb.inc(chunk.len() as u64);
    }
    if let Some(sb) = &set_b {
        for chunk in sb.chunks(bs) {
            let imgs = load_chw_files(chunk, size)?;
            mb.push_rows(&features(b, rae, &imgs, size)?)?;
            pb.inc(chunk.len() as u64);
        }
    }
    if let Some((list, _)) = &pairs {
        if let Some(sb) = &set_b {
            for &(i, j) in list {
                let x = load_chw_files(std::slice::from_ref(&set_a[i]), size)?;
                let y = load_chw_files(std::slice::from_ref(&sb[j]), size)?;
                score(&x, &y)?;
            }
        }
    }
    pb.finish_and_clear();
    let need = |m: &Moments, what: &Path| {
        if m.count() < 2 {
            Err(CliError::new(format!(
                "{}: the Fréchet distance needs at least 2 images per set, found {}",
                what.display(),
                m.count()
            )))
        } else {
            Ok(())
        }
    };
    need(&ma, &a.images)?;
    need(&mb, a.reference.as_deref().unwrap_or(&a.images))?;
    let (mu1, s1) = moments_of(&ma)?;
    let (mu2, s2) = moments_of(&mb)?;
    let fd = frechet_distance(&mu1, &s1, &mu2, &s2)?;
    let pairing = if a.reconstruct {
        Some(pairs.map_or(Pairing::Reconstructed, |p| p.1))
    } else {
        None
    };
    Ok(EvalReport {
        fd,
        feature_dim: c,
        count: set_a.len(),
        reference_count: mb.count() as usize,
        psnr: Summary::of(&psnrs),
        ssim: Summary::of(&ssims),
        pairing,
    })
}

/// The RAE of `eval` (its latent statistics are optional: features are taken before them).
fn load_eval_rae<B: Backend>(b: &B, a: &EvalArgs) -> CliResult<Rae<B>> {
    let mut paths = crate::config::resolve_rae(&a.rae, Some(Path::new("runs/default/rae")))?;
    if paths.stats.as_ref().is_some_and(|p| !p.exists()) {
        paths.stats = None;
    }
    load_rae(b, &paths)
}

/// `eval` with Inception metrics: extracts features of `a.images` (and of the reference
/// where needed) on `b`, prints one line per metric and writes `--json`. With
/// `--reconstruct` and no second set: the rFID path ([`rfid`]), where psnr and ssim may be
/// asked too.
fn run_inception<B: Backend>(b: &B, a: &EvalArgs, metrics: &[Metric]) -> CliResult<EvalOutput> {
    let weights = a
        .inception
        .as_deref()
        .ok_or_else(|| inception::missing_inception(metrics))?;
    let rfid = a.reconstruct && a.reference.is_none();
    let allowed =
        |m: &Metric| m.needs_inception() || rfid && matches!(m, Metric::Psnr | Metric::Ssim);
    if let Some(m) = metrics.iter().find(|m| !allowed(m)) {
        return Err(CliError::new(format!(
            "--metrics: {} cannot be combined with Inception metrics in one run (run eval \
             twice; psnr and ssim combine with them as `eval DIR --reconstruct`)",
            format!("{m:?}").to_lowercase()
        )));
    }
    let mut fx = InceptionFeatures::load(b.clone(), weights)?;
    let results = if rfid {
        let rae = load_eval_rae(b, a)?;
        let size = a.image_size.unwrap_or(rae.decoder.config.image_size);
        rfid::evaluate_rfid(b, &rae, &mut fx, &a.images, metrics, size, a.batch_size)?
    } else {
        inception::evaluate_inception(
            &mut fx,
            &a.images,
            a.reference_stats.as_deref(),
            metrics,
            a.image_size.unwrap_or(256),
            a.batch_size,
            a.save_stats.as_deref(),
        )?
    };
    samples::report(&results, a.json.as_deref())?;
    Ok(EvalOutput::Inception(results))
}

/// What one `eval` run measured.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOutput {
    /// RAE-feature FD, PSNR, SSIM.
    Rae(EvalReport),
    /// Inception metrics by name (`fid`, `is`, `is_std`, `sfid`, `kid`, `precision`, ...).
    Inception(Vec<(String, JsonValue)>),
}

/// The `eval` command.
#[derive(Debug)]
pub struct EvalJob(pub EvalArgs);

impl Job for EvalJob {
    type Output = EvalOutput;
    fn run<B: Backend>(self, b: &B) -> CliResult<EvalOutput> {
        let a = self.0;
        // The paper's metrics when Inception weights are given, else the RAE-feature FD.
        let default = if a.inception.is_some() && a.reconstruct && a.reference.is_none() {
            "fid,psnr,ssim"
        } else if a.inception.is_some() {
            inception::PAPER_METRICS
        } else {
            "rae-fd"
        };
        let metrics = inception::parse_metrics(a.metrics.as_deref().unwrap_or(default))?;
        if metrics.iter().any(|m| m.needs_inception()) {
            return run_inception(b, &a, &metrics);
        }
        let rae = load_eval_rae(b, &a)?;
        let report = evaluate(b, &rae, &a)?;
        println!(
            "FD (RAE {} encoder features, {}-d): {:.6} ({} images vs {} {})",
            rae.encoder.family(),
            report.feature_dim,
            report.fd,
            report.count,
            report.reference_count,
            if a.reference.is_some() {
                "reference images"
            } else {
                "reconstructions"
            }
        );
        let how = match report.pairing {
            Some(Pairing::Name) => "paired by name",
            Some(Pairing::Order) => "paired by order",
            Some(Pairing::Reconstructed) => "reconstructed through the RAE",
            None => "",
        };
        if let Some(p) = &report.psnr {
            println!(
                "PSNR: mean {:.3} dB, min {:.3}, max {:.3} ({how})",
                p.mean, p.min, p.max
            );
        }
        if let Some(s) = &report.ssim {
            println!(
                "SSIM: mean {:.5}, min {:.5}, max {:.5}",
                s.mean, s.min, s.max
            );
        }
        if let Some(path) = &a.json {
            let text = report
                .to_json(&a.images, a.reference.as_deref())
                .to_json_pretty()?;
            write_atomic(path, text.as_bytes())?;
            eprintln!("results -> {}", path.display());
        }
        Ok(EvalOutput::Rae(report))
    }
}
