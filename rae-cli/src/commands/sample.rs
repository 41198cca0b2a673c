//! `rae-cli sample`: class-conditional samples from a trained DiT-DH, decoded by the RAE,
//! written as one PNG per sample and a grid (one row per class).

use std::path::{Path, PathBuf};

use rae_core::safetensors::TensorOut;
use rae_core::Backend;

use super::generate::{generate, initial_noise, SampleSettings};
use crate::backends::Job;
use crate::ckpt::{check_writable_dir, write_atomic};
use crate::cli::SampleArgs;
use crate::errors::{CliError, CliResult};
use crate::files::load_tensor_file;
use crate::image_io::{grid, save_png};
use crate::presets;

/// What `sample` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutput {
    /// Labels of the samples, in order.
    pub labels: Vec<u32>,
    /// The grid PNG.
    pub grid: PathBuf,
}

fn parse_interval(s: &str) -> CliResult<(f32, f32)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || {
        CliError::new(format!(
            "--cfg-interval {s:?}: expected MIN,MAX with 0 <= MIN <= MAX <= 1"
        ))
    };
    match parts.as_slice() {
        [a, b] => {
            let (a, b): (f32, f32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if 0.0 <= a && a <= b && b <= 1.0 {
                Ok((a, b))
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

fn parse_classes(a: &SampleArgs, num_classes: usize) -> CliResult<Vec<u32>> {
    let list: Vec<u32> = match (&a.class, &a.classes) {
        (Some(c), None) => vec![*c],
        (None, Some(s)) => s
            .split(',')
            .map(|x| {
                x.trim().parse::<u32>().map_err(|_| {
                    CliError::new(format!(
                        "--classes {s:?}: expected comma-separated class numbers"
                    ))
                })
            })
            .collect::<CliResult<_>>()?,
        (None, None) => (0..num_classes.min(1000) as u32).collect(),
        (Some(_), Some(_)) => return Err(CliError::new("give --class or --classes, not both")),
    };
    if let Some(bad) = list.iter().find(|c| **c as usize >= num_classes) {
        return Err(CliError::new(format!(
            "class {bad} is outside the model's {num_classes} classes (0..{})",
            num_classes - 1
        )));
    }
    Ok(list)
}

/// The `sample` command.
#[derive(Debug)]
pub struct SampleJob(pub SampleArgs);

impl Job for SampleJob {
    type Output = SampleOutput;
    fn run<B: Backend>(self, b: &B) -> CliResult<SampleOutput> {
        let a = self.0;
        let ckpt = a
            .ckpt
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs/default/dit-train.safetensors"));
        if !ckpt.exists() {
            return Err(CliError::new(format!(
                "no DiT-DH checkpoint at {}: train one first (`rae-cli train`) or pass --ckpt",
                ckpt.display()
            )));
        }
        let checked = crate::store::check_dit_checkpoint(&ckpt)?;
        let default_rae = ckpt
            .parent()
            .map(|p| p.join("rae"))
            .unwrap_or_else(|| PathBuf::from("rae"));
        let paths = crate::store::resolve_rae(&a.rae, Some(&default_rae))?;
        let rae = presets::load_rae(b, &paths)?;
        let latent = rae.latent_dims();
        // [config hook] stage_2.params of a reference YAML give the architecture.
        let file = match checked {
            Some(f) => f,
            None => load_tensor_file(&ckpt)?,
        };
        let model = match crate::config::dit_for_sample(a.plan.as_ref(), false, latent) {
            Some(cfg) => crate::store::dit_from_file(b, &file, &ckpt, cfg?)?,
            None => crate::store::load_dit_from(b, &file, &ckpt, a.model.as_deref(), latent, None)?,
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
        let guide = match &a.guidance_model {
            Some(p) => {
                // [config hook] guidance.guidance_model.params of a reference YAML.
                let g = match crate::config::dit_for_sample(a.plan.as_ref(), true, latent) {
                    Some(cfg) => crate::store::load_dit_with(b, p, cfg?)?,
                    None => crate::store::load_dit(
                        b,
                        p,
                        a.model.as_deref(),
                        latent,
                        Some(mc.num_classes),
                    )?,
                };
                Some(g)
            }
            None => None,
        };
        let classes = parse_classes(&a, mc.num_classes)?;
        let labels: Vec<u32> = classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, a.num.max(1)))
            .collect();
        crate::limits::check_sample_volume(labels.len(), latent.iter().product())?;
        let (ck_shift, ck_cfg) = training_sampling_defaults(&ckpt)?;
        let settings = SampleSettings {
            sampler: a.sampler.parse()?,
            steps: a.steps,
            guidance_scale: a.cfg_scale.or(ck_cfg).unwrap_or(1.0),
            interval: parse_interval(&a.cfg_interval)?,
            shift_base: a.shift_base.or(ck_shift).unwrap_or(4096),
            seed: a.seed,
        };
        check_writable_dir(&a.out)?;
        let noise = match &a.init_noise {
            Some(p) => {
                let f = load_tensor_file(p)?;
                let t = f.tensors.get("noise").ok_or_else(|| {
                    CliError::new(format!("{} has no tensor \"noise\"", p.display()))
                })?;
                let want = [labels.len(), latent[0], latent[1], latent[2]];
                if t.shape != want {
                    return Err(CliError::new(format!(
                        "{}: noise has shape {:?} but {} samples of latents {:?} need {:?}",
                        p.display(),
                        t.shape,
                        labels.len(),
                        latent,
                        want
                    )));
                }
                b.upload(&t.data, &want)?
            }
            None => initial_noise(b, &model, labels.len(), a.seed)?,
        };
        eprintln!(
            "sampling {} images ({} classes × {}), {:?} with {} grid points, guidance {}{}",
            labels.len(),
            classes.len(),
            a.num.max(1),
            settings.sampler,
            settings.steps,
            settings.guidance_scale,
            if guide.is_some() {
                " (AutoGuidance)"
            } else {
                ""
            }
        );
        let z = generate(b, &model, guide.as_ref(), &labels, noise, &settings)?;
        let host = b.download(&z)?;
        check_finite_samples(&host, &ckpt, settings.guidance_scale)?;
        if let Some(p) = &a.save_latents {
            let shape = z.dims().to_vec();
            let lab: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let bytes = rae_core::safetensors::serialize(
                &[
                    TensorOut::f32("latents", &shape, &host),
                    TensorOut::i64("labels", &[labels.len()], &lab),
                ],
                &[
                    ("format".into(), "rae-latents".into()),
                    ("normalized".into(), "true".into()),
                ],
            )?;
            write_atomic(p, &bytes)?;
        }
        let imgs = crate::store::decode_images(b, &rae, &z)?;
        for (i, (img, l)) in imgs.iter().zip(&labels).enumerate() {
            save_png(&a.out.join(format!("{i:06}-class{l}.png")), img)?;
        }
        let grid_path = a.out.join("grid.png");
        save_png(&grid_path, &grid(&imgs, a.num.max(1)))?;
        eprintln!("wrote {} samples and {}", imgs.len(), grid_path.display());
        Ok(SampleOutput {
            labels,
            grid: grid_path,
        })
    }
}

/// Used by tests: the default checkpoint path of a run folder.
pub fn default_ckpt(run: &Path) -> PathBuf {
    run.join("dit-train.safetensors")
}

/// The shift base and preview guidance scale a training run recorded in its checkpoint's
/// `config` metadata (absent for reference checkpoints). Metadata that is there but cannot
/// be read, or holds values out of range, is an error naming the checkpoint, never a silent
/// default.
pub fn training_sampling_defaults(ckpt: &Path) -> CliResult<(Option<usize>, Option<f32>)> {
    let Some((_, meta)) = crate::files::safetensors_header(ckpt) else {
        return Ok((None, None));
    };
    let Some(text) = meta.iter().find(|(k, _)| k == "config").map(|(_, v)| v) else {
        return Ok((None, None));
    };
    let source = format!("{} (metadata config)", ckpt.display());
    let v = rae_core::json::parse_named(text, &source)?;
    let bad = |key: &str, x: &rae_core::json::JsonValue, want: &str| {
        CliError::new(format!("{source}: {key} = {x} is not {want}"))
    };
    let shift = match v.get("shift_base") {
        None | Some(rae_core::json::JsonValue::Null) => None,
        Some(x) => {
            let want = "a shift base (an integer in 0..=2^24)";
            let s = x.as_usize().ok_or_else(|| bad("shift_base", x, want))?;
            if s > crate::limits::MAX_SHIFT_BASE {
                return Err(bad("shift_base", x, want));
            }
            Some(s)
        }
    };
    let cfg = match v.get("sample_cfg") {
        None | Some(rae_core::json::JsonValue::Null) => None,
        Some(x) => {
            let want = "a finite guidance scale";
            let w = x.as_f64().ok_or_else(|| bad("sample_cfg", x, want))?;
            if !w.is_finite() || w.abs() > crate::limits::MAX_GUIDANCE {
                return Err(bad("sample_cfg", x, want));
            }
            Some(w as f32)
        }
    };
    Ok((shift, cfg))
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
