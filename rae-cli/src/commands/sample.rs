//! `rae-cli sample`: class-conditional samples from a trained DiT-DH, decoded by the RAE,
//! written as one PNG per sample and a grid (one row per class). The run is settled first
//! ([`SampleRun`]: checkpoint, RAE, classes, sampler and its defaults). With `--eval-ref`
//! the decoded samples (the uint8 pixels their PNGs hold) go straight to Inception-v3 in
//! batches and the metrics against the reference are printed at the end; `--no-save`
//! writes no images.

use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::Backend;

use super::eval::extractor::InceptionFeatures;
use super::eval::inception::{Accumulator, Features};
use super::eval::samples::{finish_against, push_images, report};
use super::generate::{decode_images, generate, initial_noise};
use crate::backends::Job;
use crate::cli::SampleArgs;
use crate::config::{dit_for_sample, SampleRun};
use crate::errors::{CliError, CliResult};
use crate::image_io::{grid, save_png};
use crate::store::{self, check_writable_dir};

/// What `sample` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutput {
    /// Labels of the samples, in order.
    pub labels: Vec<u32>,
    /// The grid PNG (`None` with `--no-save`).
    pub grid: Option<PathBuf>,
    /// The `--eval-ref` metrics by name.
    pub metrics: Option<Vec<(String, JsonValue)>>,
}

/// The `sample` command.
#[derive(Debug)]
pub struct SampleJob(pub SampleArgs);

impl Job for SampleJob {
    type Output = SampleOutput;
    fn run<B: Backend>(self, b: &B) -> CliResult<SampleOutput> {
        let (run, checked) = SampleRun::settle(self.0)?;
        let ckpt = &run.ckpt;
        let rae = store::load_rae(b, &run.rae)?;
        let latent = rae.latent_dims();
        // [config hook] stage_2.params of a reference YAML give the architecture.
        let file = match checked {
            Some(f) => f,
            None => store::load_tensor_file(ckpt)?,
        };
        let model = match dit_for_sample(run.plan.as_ref(), false, latent) {
            Some(cfg) => store::dit_from_file(b, &file, ckpt, cfg?)?,
            None => store::load_dit_from(b, &file, ckpt, run.model.as_deref(), latent, None)?,
        };
        drop(file);
        let mc = &model.config;
        if [mc.in_channels, mc.input_size, mc.input_size] != latent {
            return Err(CliError::new(format!(
                "the model {} works on latents [{}, {}, {}] but the RAE makes {:?}",
                ckpt.display(),
                mc.in_channels,
                mc.input_size,
                mc.input_size,
                latent
            )));
        }
        let guide = match &run.guidance_model {
            // [config hook] guidance.guidance_model.params of a reference YAML.
            Some(p) => Some(match dit_for_sample(run.plan.as_ref(), true, latent) {
                Some(cfg) => store::load_dit_with(b, p, cfg?)?,
                None => store::load_dit(b, p, run.model.as_deref(), latent, Some(mc.num_classes))?,
            }),
            None => None,
        };
        let classes = run.classes.resolve(mc.num_classes)?;
        let labels: Vec<u32> = classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, run.per_class))
            .collect();
        crate::limits::check_sample_volume(labels.len(), latent.iter().product())?;
        let settings = &run.settings;
        if !run.no_save {
            check_writable_dir(&run.out)?;
        }
        // Loaded before sampling, so bad weights stop the run before its long part.
        let mut fx = match &run.eval {
            Some(e) => Some(InceptionFeatures::load(b.clone(), &e.inception)?),
            None => None,
        };
        eprintln!("{run}");
        let noise = match &run.init_noise {
            Some(p) => {
                let want = [labels.len(), latent[0], latent[1], latent[2]];
                store::load_noise(b, p, want)?
            }
            None => initial_noise(b, &model, labels.len(), settings.seed)?,
        };
        eprintln!(
            "sampling {} images ({} classes × {}), {:?} with {} grid points, guidance {}{}",
            labels.len(),
            classes.len(),
            run.per_class,
            settings.sampler,
            settings.steps,
            settings.guidance_scale,
            if guide.is_some() {
                " (AutoGuidance)"
            } else {
                ""
            }
        );
        let z = generate(b, &model, guide.as_ref(), &labels, noise, settings)?;
        let host = b.download(&z)?;
        check_finite_samples(&host, ckpt, settings.guidance_scale)?;
        if let Some(p) = &run.save_latents {
            let lab: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            store::save_latents(p, z.dims(), &host, &lab, true, &run.to_metadata())?;
        }
        let imgs = decode_images(b, &rae, &z)?;
        let grid_path = if run.no_save {
            None
        } else {
            for (i, (img, l)) in imgs.iter().zip(&labels).enumerate() {
                save_png(&run.out.join(format!("{i:06}-class{l}.png")), img)?;
            }
            let grid_path = run.out.join("grid.png");
            save_png(&grid_path, &grid(&imgs, run.per_class))?;
            eprintln!("wrote {} samples and {}", imgs.len(), grid_path.display());
            Some(grid_path)
        };
        let metrics = match (&run.eval, fx.as_mut()) {
            (Some(e), Some(fx)) => {
                let mut acc = Accumulator::new(fx.dims());
                push_images(fx, &mut acc, &imgs, e.batch_size)?;
                let size = imgs.first().map_or(256, |i| i.height() as usize);
                let m = finish_against(fx, acc, &e.reference, &e.metrics, size, e.batch_size)?;
                report(&m, e.json.as_deref())?;
                Some(m)
            }
            _ => None,
        };
        Ok(SampleOutput {
            labels,
            grid: grid_path,
            metrics,
        })
    }
}

/// Used by tests: the default checkpoint path of a run folder.
pub fn default_ckpt(run: &Path) -> PathBuf {
    run.join("dit-train.safetensors")
}

/// An error when sampling produced NaN or infinite latents (broken weights or a guidance
/// scale that makes the ODE blow up), instead of writing black images.
fn check_finite_samples(host: &[f32], ckpt: &Path, guidance: f32) -> CliResult<()> {
    let bad = host.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(CliError::new(format!(
            "sampling with {} (guidance scale {guidance}) produced {bad} non-finite latent \
             values of {}; nothing was written. The weights may be corrupt or the guidance \
             scale too large",
            ckpt.display(),
            host.len()
        )));
    }
    Ok(())
}
