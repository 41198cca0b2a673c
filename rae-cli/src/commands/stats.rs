//! `rae-cli stats`: per-element latent mean and variance over a dataset (§2.4.1), exact
//! moments by default or the reference's running-average rule.

use std::path::Path;

use rae_core::models::Rae;
use rae_core::Backend;

use crate::backends::Job;
use crate::cli::StatsArgs;
use crate::data::{load_batch, BatchOrder, Dataset, ImageFolder, Shapes};
use crate::errors::{CliError, CliResult};
use crate::progress::bar;
pub use crate::store::save_stats;

/// How the statistics are accumulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRule {
    /// Exact mean and biased variance over every latent (f64 accumulation).
    Exact,
    /// The reference: `running ← 0.9·running + 0.1·batch`, from mean 0 and variance 1.
    Running,
}

/// Mean and variance of the un-normalised latents `[C·h·w]` of `rae` over `ds`.
pub fn compute_stats<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    ds: &dyn Dataset,
    bs: usize,
    rule: StatsRule,
    flip: bool,
    seed: u64,
) -> CliResult<(Vec<f32>, Vec<f32>)> {
    if ds.is_empty() {
        return Err(CliError::new("statistics over an empty dataset"));
    }
    let mut plain = rae.clone();
    plain.stats = None;
    let dim: usize = plain.latent_dims().iter().product();
    let s = ds.image_size();
    let mut sum = vec![0.0f64; dim];
    let mut sum_sq = vec![0.0f64; dim];
    let mut run_mean = vec![0.0f64; dim];
    let mut run_var = vec![1.0f64; dim];
    let mut order = BatchOrder::new(seed, ds.len(), flip);
    let batches = ds.len().div_ceil(bs);
    let pb = bar(batches as u64, "stats");
    let mut seen = 0usize;
    for k in 0..batches {
        let n = bs.min(ds.len() - k * bs);
        let items: Vec<(usize, bool)> = if rule == StatsRule::Running || flip {
            order.batch(k as u64, bs).into_iter().take(n).collect()
        } else {
            (k * bs..k * bs + n).map(|i| (i, false)).collect()
        };
        let (imgs, _) = load_batch(ds, &items)?;
        let x = b.upload(&imgs, &[n, 3, s, s])?;
        let z = b.download(&plain.encode(b, &x)?)?;
        let (mut bm, mut bv) = (vec![0.0f64; dim], vec![0.0f64; dim]);
        for i in 0..n {
            for j in 0..dim {
                let v = z[i * dim + j] as f64;
                sum[j] += v;
                sum_sq[j] += v * v;
                bm[j] += v;
                bv[j] += v * v;
            }
        }
        for j in 0..dim {
            let m = bm[j] / n as f64;
            let var = (bv[j] / n as f64 - m * m).max(0.0);
            run_mean[j] = 0.9 * run_mean[j] + 0.1 * m;
            run_var[j] = 0.9 * run_var[j] + 0.1 * var;
        }
        seen += n;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (mean, var): (Vec<f32>, Vec<f32>) = match rule {
        StatsRule::Exact => (0..dim)
            .map(|j| {
                let m = sum[j] / seen as f64;
                (m as f32, (sum_sq[j] / seen as f64 - m * m).max(0.0) as f32)
            })
            .unzip(),
        StatsRule::Running => (
            run_mean.iter().map(|v| *v as f32).collect(),
            run_var.iter().map(|v| *v as f32).collect(),
        ),
    };
    Ok((mean, var))
}

/// The `stats` command.
#[derive(Debug)]
pub struct StatsJob(pub StatsArgs);

impl Job for StatsJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        let mut paths = crate::config::resolve_rae(&a.rae, Some(Path::new("runs/default/rae")))?;
        paths.stats = None;
        let rae = crate::store::load_rae(b, &paths)?;
        let size = a.data.image_size.unwrap_or(rae.decoder.config.image_size);
        let ds: Box<dyn Dataset> = match &a.data.data {
            Some(d) => Box::new(ImageFolder::open(d, size)?),
            None => Box::new(Shapes::new(
                size,
                a.data.builtin_size,
                crate::data::BUILTIN_DATA_SEED,
            )),
        };
        let rule = if a.running {
            StatsRule::Running
        } else {
            StatsRule::Exact
        };
        let (mean, var) = compute_stats(
            b,
            &rae,
            ds.as_ref(),
            a.batch_size.max(1),
            rule,
            a.flip,
            a.seed,
        )?;
        save_stats(&a.out, &mean, &var, rae.latent_dims())?;
        crate::say!(
            "statistics over {} images ({:?}) -> {}",
            ds.len(),
            rule,
            a.out.display()
        );
        Ok(())
    }
}
