//! `rae-cli train`: the built-in tiny pipeline, stage 1 (decoder) and stage 2 (DiT-DH),
//! with atomic, resumable checkpoints. The run is settled first ([`TrainRun`], then a
//! [`crate::config::Stage1Run`] or [`crate::config::Stage2Run`] per stage); each stage is a
//! `rae_core::train::Trainer` driven by the core's one training loop, and this module wires
//! data, progress and files to it.

mod progress;
mod stage1;
mod stage2;

use std::time::Instant;

use rae_core::models::{Dinov2Encoder, Encoder, LatentStats};
use rae_core::nn::Init;
use rae_core::Backend;

use super::stats::{compute_stats, StatsRule};
use crate::backends::Job;
use crate::cli::TrainArgs;
use crate::config::train_run::{PIPELINE_STATS_BATCH, TINY_ENCODER_SEED};
use crate::config::{TrainMode, TrainRun};
use crate::data::{Dataset, ImageFolder, Shapes, BUILTIN_DATA_SEED};
use crate::errors::{CliError, CliResult};
use crate::presets;
use crate::store::{self, check_writable_dir};

pub use stage1::train_decoder;
pub use stage2::{preview_grid, train_dit, LatentSource};

/// The `train` command.
#[derive(Debug)]
pub struct TrainJob(pub TrainArgs);

impl Job for TrainJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let run = TrainRun::settle(self.0)?;
        if run.mode == TrainMode::CheckData {
            return super::check_data::check_only(&run.data);
        }
        check_writable_dir(&run.out)?;
        crate::say!("{run}");
        let paths = match (&run.mode, &run.rae) {
            (TrainMode::Stage1 | TrainMode::Stage2, Some(p)) => p,
            _ => return run_pipeline(b, &run),
        };
        if run.mode == TrainMode::Stage1 {
            let encoder = store::load_encoder(b, &paths.encoder)?;
            let cfg = match &paths.decoder_config {
                Some(c) => presets::decoder_config(c)?,
                None => {
                    return Err(CliError::new(
                        "--stage 1 needs --decoder-config (a config.json, or B, L, XL)",
                    ))
                }
            };
            let ds = open_data(&run, cfg.image_size)?;
            let s1 = run.stage1(cfg, ds.len())?;
            train_decoder(b, &s1, encoder, ds.as_ref(), run.data.workers)?;
            return Ok(());
        }
        let rae = store::load_rae(b, paths)?;
        if rae.stats.is_none() {
            return Err(CliError::new(
                "stage 2 needs latent statistics (--stats or stats.safetensors in the RAE folder)",
            ));
        }
        let source = match &run.latents {
            Some(p) if p.is_dir() => LatentSource::Shards(store::ShardSet::open(p)?),
            Some(p) => LatentSource::Cache(store::load_latents(p)?),
            None => LatentSource::Images(open_data(&run, rae.decoder.config.image_size)?),
        };
        train_dit(b, &run, &rae, source)?;
        Ok(())
    }
}

fn open_data(run: &TrainRun, default_size: usize) -> CliResult<Box<dyn Dataset>> {
    let size = run.data.size(default_size);
    Ok(match &run.data.folder {
        Some(dir) => {
            let folder = ImageFolder::open_indexed(dir, size, run.data.class_index.as_deref())?;
            super::check_data::before_training(&run.data, &folder)?;
            Box::new(folder)
        }
        None => Box::new(Shapes::new(size, run.data.builtin_size, BUILTIN_DATA_SEED)),
    })
}

/// The built-in default: tiny frozen encoder, decoder (stage 1), statistics, DiT-DH
/// (stage 2), each skipped when its output already exists (so the command can be re-run
/// to continue).
fn run_pipeline<B: Backend>(b: &B, run: &TrainRun) -> CliResult<()> {
    let start = Instant::now();
    let rae_dir = run.pipeline_rae_dir();
    let enc_dir = rae_dir.join("encoder");
    let dec_path = rae_dir.join("decoder.safetensors");
    let stats_path = rae_dir.join("stats.safetensors");
    let lead = crate::dist::is_lead();
    if run.fresh && lead {
        for p in [
            run.out.join("decoder-train.safetensors"),
            run.out.join("dit-train.safetensors"),
            dec_path.clone(),
            stats_path.clone(),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
    // In a group, every process decides what to skip from the same files: after process 0
    // removed them (--fresh) and before anyone writes.
    crate::dist::barrier();
    let (have_encoder, have_decoder, have_stats) = (
        enc_dir.join("config.json").exists(),
        dec_path.exists(),
        stats_path.exists(),
    );
    crate::dist::barrier();
    let dec_cfg = presets::tiny_decoder();
    let ds = open_data(run, dec_cfg.image_size)?;
    crate::say!(
        "data: {} ({} images, {} classes, {}×{})",
        run.data.describe(),
        ds.len(),
        ds.classes().len(),
        ds.image_size(),
        ds.image_size()
    );
    if ds.image_size() != dec_cfg.image_size {
        return Err(CliError::new(format!(
            "the tiny pipeline works on {0}×{0} images: pass --image-size {0}",
            dec_cfg.image_size
        )));
    }
    // 1. The frozen encoder, from a fixed seed.
    let encoder = if have_encoder {
        store::load_encoder(b, &enc_dir)?
    } else {
        let enc = Dinov2Encoder::new(
            b,
            &mut Init::new(TINY_ENCODER_SEED),
            presets::tiny_encoder(),
        )?;
        if lead {
            store::save_encoder_dir(b, &Encoder::from(enc.clone()), &enc_dir)?;
        }
        crate::say!(
            "encoder: tiny DINOv2-style ({} params, frozen, seed {TINY_ENCODER_SEED:#x}) -> {}",
            presets::count(&enc),
            enc_dir.display()
        );
        enc.into()
    };
    // 2. Stage 1: the decoder (the trained EMA weights are used as they are; what was saved
    // is read back only when this stage is skipped).
    let decoder = if !have_decoder {
        let s1 = run.stage1(dec_cfg.clone(), ds.len())?;
        train_decoder(b, &s1, encoder.clone(), ds.as_ref(), run.data.workers)?
    } else {
        crate::say!(
            "stage 1: {} exists, skipping decoder training",
            dec_path.display()
        );
        store::load_decoder(b, &dec_path, None)?
    };
    let mut rae = presets::assemble_rae(encoder, decoder, None, None)?;
    // 3. Latent statistics (exact moments over the dataset).
    let stats = if !have_stats {
        let (mean, var) = compute_stats(
            b,
            &rae,
            ds.as_ref(),
            PIPELINE_STATS_BATCH,
            StatsRule::Exact,
            false,
            run.seed,
        )?;
        if lead {
            store::save_stats(&stats_path, &mean, &var, rae.latent_dims())?;
        }
        crate::say!(
            "statistics: exact per-element moments over {} images -> {}",
            ds.len(),
            stats_path.display()
        );
        LatentStats::new(b, &mean, &var, presets::STATS_EPS)?
    } else {
        store::load_stats(b, &stats_path)?
    };
    rae.stats = Some(stats);
    // 4. Stage 2: DiT-DH.
    train_dit(b, run, &rae, LatentSource::Images(ds))?;
    crate::say!(
        "done in {:.1} s: {} (sample more with `rae-cli sample`)",
        start.elapsed().as_secs_f64(),
        run.out.join("samples").join("final.png").display()
    );
    Ok(())
}
