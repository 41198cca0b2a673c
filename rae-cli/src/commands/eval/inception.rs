//! `eval --metrics fid,is,sfid,kid,prec,recall`: the generation metrics of §6.1 on Inception
//! features. Images come from a folder (ADM centre crop to `--image-size`, default 256) or
//! from an `.npz` sample batch (`arr_0`, uint8 `[N, H, W, 3]`); the reference (`--ref`) is an
//! ADM reference batch (its `mu`/`sigma`/`mu_s`/`sigma_s` used when present, features of its
//! `arr_0` otherwise and for precision/recall), a statistics file of `--save-stats`, or a
//! folder. Features come from an implementation of [`Features`].

use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::metrics::{
    inception_score, kid, precision_recall, GaussianStats, KidOptions, Moments, ADM_NEIGHBOURS,
    TORCH_FIDELITY_SEED,
};

use super::list_images;
use crate::errors::{CliError, CliResult};
use crate::image_io::{adm_center_crop, check_image_size, load_rgb};
use crate::store::{is_eval_stats, load_eval_stats, save_eval_stats, EvalStats, Npz};

/// The file name of torch-fidelity's Inception-v3 weights (`--inception FILE`).
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";

/// The metrics of the paper's tables, the default of `eval --inception FILE`.
pub const PAPER_METRICS: &str = "fid,sfid,is,prec,recall";

/// What an Inception extractor gives for a batch of `n` images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InceptionOut {
    /// Pool-3 features `[n, pool_dim]` (2048).
    pub pool: Vec<f32>,
    /// `logits_unbiased` `[n, logits_dim]` (1008).
    pub logits: Vec<f32>,
    /// ADM's spatial features `[n, spatial_dim]` (2023: first 7 channels of `mixed_6/conv`).
    pub spatial: Vec<f32>,
}

/// Widths of the three feature kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDims {
    /// Pool width.
    pub pool: usize,
    /// Logit width.
    pub logits: usize,
    /// Spatial width.
    pub spatial: usize,
}

impl Default for FeatureDims {
    fn default() -> Self {
        FeatureDims {
            pool: 2048,
            logits: 1008,
            spatial: 2023,
        }
    }
}

/// An Inception feature extractor.
pub trait Features {
    /// The widths of [`InceptionOut`]'s arrays (Inception-v3: the default).
    fn dims(&self) -> FeatureDims {
        FeatureDims::default()
    }
    /// Features of `n` uint8 images `[n, h, w, 3]` (HWC, values 0–255, as ADM feeds them).
    fn extract(&mut self, images: &[u8], n: usize, h: usize, w: usize) -> CliResult<InceptionOut>;
}

/// One metric of `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// FID on pool features.
    Fid,
    /// Inception Score.
    Is,
    /// sFID on spatial features.
    Sfid,
    /// KID.
    Kid,
    /// Improved precision.
    Prec,
    /// Improved recall.
    Recall,
    /// Fréchet distance on RAE encoder features (the default).
    RaeFd,
    /// PSNR of reconstructions.
    Psnr,
    /// SSIM of reconstructions.
    Ssim,
}

impl Metric {
    /// Whether the metric needs Inception features.
    pub fn needs_inception(self) -> bool {
        !matches!(self, Metric::RaeFd | Metric::Psnr | Metric::Ssim)
    }
}

/// Parses `--metrics`: comma-separated names of fid, is, sfid, kid, prec, recall, rae-fd,
/// psnr, ssim.
pub fn parse_metrics(s: &str) -> CliResult<Vec<Metric>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = match name.to_ascii_lowercase().as_str() {
            "fid" => Metric::Fid,
            "is" => Metric::Is,
            "sfid" => Metric::Sfid,
            "kid" => Metric::Kid,
            "prec" | "precision" => Metric::Prec,
            "recall" | "rec" => Metric::Recall,
            "rae-fd" | "fd" => Metric::RaeFd,
            "psnr" => Metric::Psnr,
            "ssim" => Metric::Ssim,
            _ => {
                return Err(CliError::new(format!(
                    "--metrics: unknown metric '{name}' (known: fid, is, sfid, kid, prec, recall, rae-fd, psnr, ssim)"
                )))
            }
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(CliError::new("--metrics: no metric named"));
    }
    Ok(out)
}

/// The error for Inception metrics without `--inception`.
pub fn missing_inception(metrics: &[Metric]) -> CliError {
    let names: Vec<String> = metrics
        .iter()
        .filter(|m| m.needs_inception())
        .map(|m| format!("{m:?}").to_lowercase())
        .collect();
    CliError::new(format!(
        "--metrics {} needs Inception-v3 weights: pass --inception FILE with torch-fidelity's \
         {INCEPTION_FILE}",
        names.join(",")
    ))
}

/// Where images come from.
#[derive(Debug)]
enum Images {
    Folder(Vec<PathBuf>, usize),
    Npz(Npz),
}

impl Images {
    fn open(path: &Path, size: usize) -> CliResult<Images> {
        if path.is_file() && path.extension().is_some_and(|e| e == "npz") {
            return Ok(Images::Npz(Npz::open(path)?));
        }
        check_image_size(size)?;
        Ok(Images::Folder(list_images(path)?, size))
    }

    /// Calls `f(images, n, h, w)` on batches of at most `bs` uint8 HWC images; `pb` learns
    /// the count once it is known (an `.npz` array is read once, not again for its length).
    fn for_batches(
        &self,
        bs: usize,
        pb: &indicatif::ProgressBar,
        f: &mut dyn FnMut(&[u8], usize, usize, usize) -> CliResult<()>,
    ) -> CliResult<()> {
        match self {
            Images::Folder(files, size) => {
                pb.set_length(files.len() as u64);
                let s = check_image_size(*size)?;
                for chunk in files.chunks(bs) {
                    let mut buf = Vec::with_capacity(chunk.len() * 3 * size * size);
                    for p in chunk {
                        buf.extend(adm_center_crop(&load_rgb(p)?, s)?.into_raw());
                    }
                    f(&buf, chunk.len(), *size, *size)?;
                }
            }
            Images::Npz(npz) => {
                let a = npz.require("arr_0")?;
                let (n, h, w) = match a.shape[..] {
                    [n, h, w, 3] => (n, h, w),
                    _ => {
                        return Err(CliError::new(format!(
                            "arr_0 has shape {:?}; expected uint8 images [N, H, W, 3]",
                            a.shape
                        )))
                    }
                };
                pb.set_length(n as u64);
                let px = a.to_u8("arr_0")?;
                let per = h * w * 3;
                for start in (0..n).step_by(bs) {
                    let m = bs.min(n - start);
                    f(&px[start * per..(start + m) * per], m, h, w)?;
                }
            }
        }
        Ok(())
    }
}

/// Features of a whole set: statistics, and the rows the other metrics need.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    /// Pool and spatial statistics, with the pool rows (for kid, precision, recall).
    pub stats: EvalStats,
    /// The logits rows (for IS).
    pub logits: Vec<f32>,
}

/// Builds a [`Gathered`] batch by batch: the moments, pool rows and logits of every
/// extractor output pushed, so images never need to be kept (or written) to be scored.
#[derive(Debug)]
pub struct Accumulator {
    dims: FeatureDims,
    pool_moments: Moments,
    spatial_moments: Moments,
    pool: Vec<f32>,
    logits: Vec<f32>,
    count: usize,
}

impl Accumulator {
    /// An empty accumulator for features of widths `dims`.
    pub fn new(dims: FeatureDims) -> Self {
        Accumulator {
            dims,
            pool_moments: Moments::new(dims.pool),
            spatial_moments: Moments::new(dims.spatial),
            pool: Vec::new(),
            logits: Vec::new(),
            count: 0,
        }
    }

    /// Adds the features `out` of `n` images.
    pub fn push(&mut self, out: &InceptionOut, n: usize) -> CliResult<()> {
        let d = self.dims;
        if out.pool.len() != n * d.pool
            || out.logits.len() != n * d.logits
            || out.spatial.len() != n * d.spatial
        {
            return Err(CliError::new(
                "the Inception extractor returned arrays of the wrong size",
            ));
        }
        self.pool_moments.push_rows(&out.pool)?;
        self.spatial_moments.push_rows(&out.spatial)?;
        self.pool.extend_from_slice(&out.pool);
        self.logits.extend_from_slice(&out.logits);
        self.count += n;
        Ok(())
    }

    /// Extracts the features of `n` uint8 HWC images `[n, h, w, 3]` with `fx` and adds them.
    pub fn extract(
        &mut self,
        fx: &mut dyn Features,
        px: &[u8],
        n: usize,
        h: usize,
        w: usize,
    ) -> CliResult<()> {
        let out = fx.extract(px, n, h, w)?;
        self.push(&out, n)
    }

    /// Images pushed so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The statistics of everything pushed (at least 2 images).
    pub fn finish(self) -> CliResult<Gathered> {
        let count = self.count;
        if count < 2 {
            return Err(CliError::new(format!(
                "the metrics need at least 2 images per set, found {count}"
            )));
        }
        Ok(Gathered {
            stats: EvalStats {
                count,
                pool: GaussianStats::from_moments(&self.pool_moments)?,
                spatial: Some(GaussianStats::from_moments(&self.spatial_moments)?),
                pool_features: Some(self.pool),
            },
            logits: self.logits,
        })
    }
}

fn gather(fx: &mut dyn Features, images: &Images, bs: usize) -> CliResult<Gathered> {
    let mut acc = Accumulator::new(fx.dims());
    let pb = crate::progress::bar(0, "inception");
    images.for_batches(bs, &pb, &mut |px, n, h, w| {
        acc.extract(fx, px, n, h, w)?;
        pb.inc(n as u64);
        Ok(())
    })?;
    pb.finish_and_clear();
    acc.finish()
}

/// The reference set's statistics (and pool features where available).
fn reference_stats(
    fx: &mut dyn Features,
    path: &Path,
    size: usize,
    bs: usize,
    need_rows: bool,
) -> CliResult<EvalStats> {
    if path.is_file() && path.extension().is_some_and(|e| e == "npz") {
        let npz = Npz::open(path)?;
        let has = |n: &str| npz.get(n).map(|a| a.is_some());
        if has("mu")? && has("sigma")? && !need_rows {
            let g = |m: &str, s: &str| -> CliResult<GaussianStats> {
                Ok(GaussianStats {
                    mu: npz.require(m)?.to_f64(),
                    sigma: npz.require(s)?.to_f64(),
                })
            };
            let spatial = if has("mu_s")? && has("sigma_s")? {
                Some(g("mu_s", "sigma_s")?)
            } else {
                None
            };
            return Ok(EvalStats {
                count: 0,
                pool: g("mu", "sigma")?,
                spatial,
                pool_features: None,
            });
        }
    } else if path.is_file() {
        let bytes =
            std::fs::read(path).map_err(|e| crate::errors::io_error("cannot read", path, &e))?;
        if is_eval_stats(&bytes, path) {
            return load_eval_stats(path);
        }
    }
    Ok(gather(fx, &Images::open(path, size)?, bs)?.stats)
}

/// Computes the Inception metrics in `metrics` for `images` against `reference`; the
/// result is a JSON object with one entry per metric. `save_stats` writes the scored set's
/// statistics.
pub fn evaluate_inception(
    fx: &mut dyn Features,
    images: &Path,
    reference: Option<&Path>,
    metrics: &[Metric],
    size: usize,
    bs: usize,
    save_stats: Option<&Path>,
) -> CliResult<Vec<(String, JsonValue)>> {
    let bs = bs.max(1);
    let set = gather(fx, &Images::open(images, size)?, bs)?;
    if let Some(out) = save_stats {
        save_eval_stats(out, &set.stats)?;
        eprintln!("statistics -> {}", out.display());
    }
    let reference = reference.map(|p| Reference::Path { path: p, size, bs });
    score(fx, &set, reference, metrics)
}

/// The reference set of [`score`].
#[derive(Debug)]
pub enum Reference<'a> {
    /// An ADM `.npz`, a `--save-stats` file or an image folder (centre-cropped to `size`,
    /// extracted in batches of `bs`).
    Path {
        /// The file or folder.
        path: &'a Path,
        /// Side of the centre crop for a folder.
        size: usize,
        /// Extractor batch size.
        bs: usize,
    },
    /// Features already gathered, with the name reported for them.
    Gathered(&'a Gathered, String),
}

/// The metrics of `metrics` for the gathered set `set` against `reference` (`fx` extracts
/// the reference's features when it is a folder or an `.npz` of images).
pub fn score(
    fx: &mut dyn Features,
    set: &Gathered,
    reference: Option<Reference<'_>>,
    metrics: &[Metric],
) -> CliResult<Vec<(String, JsonValue)>> {
    let dims = fx.dims();
    let mut out: Vec<(String, JsonValue)> = vec![("count".into(), set.stats.count.into())];
    if metrics.contains(&Metric::Is) {
        let s = inception_score(
            &set.logits,
            set.stats.count,
            dims.logits,
            10.min(set.stats.count),
            Some(TORCH_FIDELITY_SEED),
        )?;
        out.push(("is".into(), s.mean.into()));
        out.push(("is_std".into(), s.std.into()));
    }
    let against: Vec<Metric> = metrics
        .iter()
        .copied()
        .filter(|m| m.needs_inception() && *m != Metric::Is)
        .collect();
    if against.is_empty() {
        return Ok(out);
    }
    let rows = against
        .iter()
        .any(|m| matches!(m, Metric::Kid | Metric::Prec | Metric::Recall));
    let (r, rname) = match reference {
        None => {
            return Err(CliError::new(
                "fid, sfid, kid, prec and recall need a reference: pass --ref FILE|DIR",
            ))
        }
        Some(Reference::Path { path, size, bs }) => (
            std::borrow::Cow::Owned(reference_stats(fx, path, size, bs.max(1), rows)?),
            path.display().to_string(),
        ),
        Some(Reference::Gathered(g, name)) => (std::borrow::Cow::Borrowed(&g.stats), name),
    };
    out.push(("reference".into(), rname.clone().into()));
    let own = set.stats.pool_features.as_deref().unwrap_or_default();
    let n = set.stats.count;
    let ref_rows = || {
        r.pool_features.as_deref().ok_or_else(|| {
            CliError::new(format!(
                "{} holds no pool features (kid, prec, recall need them)",
                rname
            ))
        })
    };
    for m in against {
        match m {
            Metric::Fid => out.push((
                "fid".into(),
                set.stats.pool.frechet_distance(&r.pool)?.into(),
            )),
            Metric::Sfid => {
                let (Some(a), Some(b)) = (&set.stats.spatial, &r.spatial) else {
                    return Err(CliError::new(format!(
                        "{} holds no spatial statistics (mu_s, sigma_s) for sfid",
                        rname
                    )));
                };
                out.push(("sfid".into(), a.frechet_distance(b)?.into()));
            }
            Metric::Kid => {
                let rr = ref_rows()?;
                let opt = KidOptions {
                    subset_size: 1000.min(n).min(r.count),
                    ..KidOptions::default()
                };
                let k = kid(own, n, rr, r.count, dims.pool, opt)?;
                out.push(("kid".into(), k.mean.into()));
                out.push(("kid_std".into(), k.std.into()));
            }
            Metric::Prec | Metric::Recall => {
                if out.iter().any(|(k, _)| k == "precision") {
                    continue;
                }
                let rr = ref_rows()?;
                let pr = precision_recall(rr, r.count, own, n, dims.pool, ADM_NEIGHBOURS)?;
                out.push(("precision".into(), pr.precision.into()));
                out.push(("recall".into(), pr.recall.into()));
            }
            _ => {}
        }
    }
    Ok(out)
}
