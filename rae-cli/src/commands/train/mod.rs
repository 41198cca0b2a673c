//! `rae-cli train`: the built-in tiny pipeline, stage 1 (decoder) and stage 2 (DiT-DH),
//! with atomic, resumable checkpoints. Each stage is a `rae_core::train::Trainer` driven by
//! the core's one training loop; this module decides the settings and wires data, progress
//! and files to it.

mod progress;
mod settings;
mod stage1;
mod stage2;

use std::time::Instant;

use rae_core::models::{Dinov2Encoder, Encoder, LatentStats};
use rae_core::nn::Init;
use rae_core::Backend;

use super::stats::{compute_stats, StatsRule};
use crate::backends::Job;
use crate::ckpt::check_writable_dir;
use crate::cli::TrainArgs;
use crate::data::{Dataset, ImageFolder, Shapes, BUILTIN_DATA_SEED};
use crate::errors::{CliError, CliResult};
use crate::presets::{self, RaePaths};

pub use stage1::train_decoder;
pub use stage2::{load_latents, preview_grid, train_dit, LatentCache, LatentSource};

/// Seed of the built-in frozen encoder (fixed: the tiny RAE is the same for every run).
pub const TINY_ENCODER_SEED: u64 = 0x00E1_C0DE;
/// Stage-1 steps of the built-in pipeline.
pub const TINY_STAGE1_STEPS: u64 = 800;
/// Stage-2 steps of the built-in pipeline.
pub const TINY_STAGE2_STEPS: u64 = 3000;
/// Stage-2 batch of the tiny preset.
pub const TINY_STAGE2_BATCH: usize = 16;
/// Base learning rate of the tiny preset's stage 2.
pub const TINY_LR: f64 = 2e-3;
/// Base learning rate of the tiny preset's stage 1.
pub const TINY_STAGE1_LR: f64 = 1e-3;
/// Shift base of the tiny preset (s ≈ 6.9 for its 2048-value latents).
pub const TINY_SHIFT_BASE: usize = 43;
/// Guidance scale of the tiny preset's sample grids.
pub const TINY_SAMPLE_CFG: f32 = 3.0;

/// The `train` command.
#[derive(Debug)]
pub struct TrainJob(pub TrainArgs);

impl Job for TrainJob {
    type Output = ();
    fn run<B: Backend>(self, b: &B) -> CliResult<()> {
        let a = self.0;
        if a.check_data {
            return super::check_data::check_only(&a);
        }
        check_writable_dir(&a.out)?;
        let pipeline = a.stage.is_none() && !a.rae.given() && a.latents.is_none();
        if pipeline {
            return run_pipeline(b, &a);
        }
        match a.stage.unwrap_or(2) {
            1 => {
                let paths = rae_paths(&a)?;
                let encoder = presets::load_encoder(b, &paths.encoder)?;
                let cfg = match &paths.decoder_config {
                    Some(c) => presets::decoder_config(c)?,
                    None => {
                        return Err(CliError::new(
                            "--stage 1 needs --decoder-config (a config.json, or B, L, XL)",
                        ))
                    }
                };
                let ds = open_data(&a, cfg.image_size)?;
                train_decoder(
                    b,
                    &a,
                    encoder,
                    cfg,
                    ds.as_ref(),
                    &a.out,
                    &a.out.join("decoder.safetensors"),
                    a.max_steps.unwrap_or(1000),
                )?;
                Ok(())
            }
            2 => {
                let paths = rae_paths(&a)?;
                let rae = presets::load_rae(b, &paths)?;
                if rae.stats.is_none() {
                    return Err(CliError::new("stage 2 needs latent statistics (--stats or stats.safetensors in the RAE folder)"));
                }
                let source = match &a.latents {
                    Some(p) => LatentSource::Cache(load_latents(b, p)?),
                    None => LatentSource::Images(open_data(&a, rae.decoder.config.image_size)?),
                };
                train_dit(b, &a, &rae, source, &a.out, a.max_steps.unwrap_or(1000))?;
                Ok(())
            }
            s => Err(CliError::new(format!("--stage {s}: must be 1 or 2"))),
        }
    }
}

/// Resolves the RAE location flags.
pub fn rae_paths(a: &TrainArgs) -> CliResult<RaePaths> {
    crate::store::resolve_rae(&a.rae, None)
}

fn open_data(a: &TrainArgs, default_size: usize) -> CliResult<Box<dyn Dataset>> {
    let size = a.data.image_size.unwrap_or(default_size);
    Ok(match &a.data.data {
        Some(dir) => {
            let folder = ImageFolder::open(dir, size)?;
            super::check_data::before_training(a, &folder)?;
            Box::new(folder)
        }
        None => Box::new(Shapes::new(size, a.data.builtin_size, BUILTIN_DATA_SEED)),
    })
}

/// The built-in default: tiny frozen encoder, decoder (stage 1), statistics, DiT-DH
/// (stage 2), each skipped when its output already exists (so the command can be re-run
/// to continue).
fn run_pipeline<B: Backend>(b: &B, a: &TrainArgs) -> CliResult<()> {
    let start = Instant::now();
    let rae_dir = a.out.join("rae");
    let enc_dir = rae_dir.join("encoder");
    let dec_path = rae_dir.join("decoder.safetensors");
    let stats_path = rae_dir.join("stats.safetensors");
    if a.fresh {
        for p in [
            a.out.join("decoder-train.safetensors"),
            a.out.join("dit-train.safetensors"),
            dec_path.clone(),
            stats_path.clone(),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
    let dec_cfg = presets::tiny_decoder();
    let ds = open_data(a, dec_cfg.image_size)?;
    eprintln!(
        "data: {} ({} images, {} classes, {}×{})",
        a.data
            .data
            .as_ref()
            .map_or("built-in coloured shapes".to_string(), |d| d
                .display()
                .to_string()),
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
    let encoder = if enc_dir.join("config.json").exists() {
        presets::load_encoder(b, &enc_dir)?
    } else {
        let enc = Dinov2Encoder::new(
            b,
            &mut Init::new(TINY_ENCODER_SEED),
            presets::tiny_encoder(),
        )?;
        crate::encoders::save_encoder_dir(b, &Encoder::from(enc.clone()), &enc_dir)?;
        eprintln!(
            "encoder: tiny DINOv2-style ({} params, frozen, seed {TINY_ENCODER_SEED:#x}) -> {}",
            presets::count(&enc),
            enc_dir.display()
        );
        enc.into()
    };
    // 2. Stage 1: the decoder (the trained EMA weights are used as they are; what was saved
    // is read back only when this stage is skipped).
    let decoder = if !dec_path.exists() {
        let steps = a.stage1_steps.unwrap_or(TINY_STAGE1_STEPS);
        train_decoder(
            b,
            a,
            encoder.clone(),
            dec_cfg.clone(),
            ds.as_ref(),
            &a.out,
            &dec_path,
            steps,
        )?
    } else {
        eprintln!(
            "stage 1: {} exists, skipping decoder training",
            dec_path.display()
        );
        presets::load_decoder(b, &dec_path, None)?
    };
    let mut rae = presets::assemble_rae(encoder, decoder, None, None)?;
    // 3. Latent statistics (exact moments over the dataset).
    let stats = if !stats_path.exists() {
        let (mean, var) = compute_stats(b, &rae, ds.as_ref(), 64, StatsRule::Exact, false, a.seed)?;
        let [c, h, w] = rae.latent_dims();
        super::stats::save_stats(&stats_path, &mean, &var, [c, h, w])?;
        eprintln!(
            "statistics: exact per-element moments over {} images -> {}",
            ds.len(),
            stats_path.display()
        );
        LatentStats::new(b, &mean, &var, presets::STATS_EPS)?
    } else {
        presets::load_stats(b, &stats_path)?
    };
    rae.stats = Some(stats);
    // 4. Stage 2: DiT-DH.
    let steps = a.max_steps.unwrap_or(TINY_STAGE2_STEPS);
    let dit = train_dit(b, a, &rae, LatentSource::Images(ds), &a.out, steps)?;
    let _ = dit;
    eprintln!(
        "done in {:.1} s: {} (sample more with `rae-cli sample`)",
        start.elapsed().as_secs_f64(),
        a.out.join("samples").join("final.png").display()
    );
    Ok(())
}
