//! The settled stage-1 objective ([`GanRun`]): which of LPIPS and the discriminator are on,
//! from which weight files, with which weights and step switches. Decided once from the GAN
//! flags (the YAML's `gan` block already written into them) and the steps per epoch.

use std::path::{Path, PathBuf};

use rae_core::gan::diffaug::DiffAug;
use rae_core::gan::disc::DiscConfig;
use rae_core::train::GanConfig;

use super::gan_args::GanArgs;
use crate::errors::{CliError, CliResult};

/// The perceptual and adversarial terms of a stage-1 run.
#[derive(Debug, Clone, PartialEq)]
pub struct GanRun {
    /// LPIPS's VGG-16 and v0.1 linear weights, when LPIPS is on.
    pub lpips: Option<(PathBuf, PathBuf)>,
    /// The DINO checkpoint and the discriminator's shape, when the GAN is on.
    pub disc: Option<(PathBuf, DiscConfig)>,
    /// The recipe's name.
    pub recipe: String,
    /// Weights and switches in steps.
    pub config: GanConfig,
}

/// The discriminator shape of a recipe name (the reference's `recipes`, plus `tiny`).
pub fn disc_recipe(name: &str) -> CliResult<DiscConfig> {
    Ok(match name {
        "S_8" => DiscConfig::s8(),
        "S_16" => DiscConfig::s16(),
        "B_16" => DiscConfig {
            embed_dim: 768,
            heads: 12,
            ..DiscConfig::s16()
        },
        "tiny" => DiscConfig::tiny(),
        _ => {
            return Err(CliError::new(format!(
                "--disc-recipe {name:?}: expected S_8, S_16, B_16 or tiny"
            )))
        }
    })
}

/// A weight file a term needs: present and a file, else an error naming the flag.
fn needed(path: Option<&Path>, flag: &str, what: &str, why: &str) -> CliResult<PathBuf> {
    let p = path.ok_or_else(|| {
        CliError::new(format!(
            "{why} needs {flag} ({what}); or train with the L1 loss alone: --no-gan"
        ))
    })?;
    if !p.is_file() {
        return Err(CliError::new(format!(
            "{flag} {}: no such file ({what})",
            p.display()
        )));
    }
    Ok(p.to_path_buf())
}

/// Epochs (maybe fractional) as steps.
fn steps_of(epochs: Option<f64>, flag: &str, spe: u64) -> CliResult<u64> {
    let e = epochs.unwrap_or(0.0);
    if !(e.is_finite() && e >= 0.0) {
        return Err(CliError::new(format!(
            "--{flag} {e}: expected a non-negative number of epochs"
        )));
    }
    Ok((e * spe as f64).round() as u64)
}

impl GanRun {
    /// The objective `g` asks for with `spe` steps per epoch; `None` for L1 alone.
    pub fn settle(g: &GanArgs, spe: u64) -> CliResult<Option<GanRun>> {
        if g.no_gan {
            return Ok(None);
        }
        let why = |term: &str| match &g.from_config {
            Some(src) => format!("the {term} of config {src} (gan block)"),
            None => format!("the {term}"),
        };
        let pw = g.perceptual_weight.unwrap_or(1.0);
        let dw = g.disc_weight.unwrap_or(0.75);
        for (flag, w) in [("--perceptual-weight", pw), ("--disc-weight", dw)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(CliError::new(format!(
                    "{flag} {w}: expected a non-negative number"
                )));
            }
        }
        let asked = g.from_config.is_some();
        let lpips = if pw > 0.0 && (asked || g.lpips_weights.is_some() || g.vgg_weights.is_some()) {
            let why = why("LPIPS term");
            Some((
                needed(
                    g.vgg_weights.as_deref(),
                    "--vgg-weights",
                    "torchvision's vgg16-397923af.pth or timm's vgg16.tv_in1k safetensors",
                    &why,
                )?,
                needed(
                    g.lpips_weights.as_deref(),
                    "--lpips-weights",
                    "LPIPS v0.1 vgg.pth, shipped in the lpips package as weights/v0.1/vgg.pth",
                    &why,
                )?,
            ))
        } else {
            None
        };
        let recipe = g.disc_recipe.clone().unwrap_or_else(|| "S_8".into());
        let disc = if dw > 0.0 && (asked || g.disc_weights.is_some()) {
            let mut cfg = disc_recipe(&recipe)?;
            if let Some(ks) = g.disc_ks {
                if ks % 2 == 0 || ks == 0 {
                    return Err(CliError::new(format!(
                        "gan.disc.arch.ks {ks}: expected an odd kernel size"
                    )));
                }
                cfg.ks = ks;
            }
            if let Some(d) = &g.disc_key_depths {
                cfg.key_depths = d.iter().copied().filter(|&k| k < cfg.depth).collect();
            }
            let p = needed(
                g.disc_weights.as_deref(),
                "--disc-weights",
                "the DINO ViT checkpoint, e.g. dino_deitsmall8_pretrain.pth",
                &why("adversarial term"),
            )?;
            Some((p, cfg))
        } else {
            None
        };
        if lpips.is_none() && disc.is_none() {
            return Ok(None);
        }
        let cutout = g.diffaug_cutout.unwrap_or(0.0);
        if !(0.0..1.0).contains(&cutout) {
            return Err(CliError::new(format!(
                "--diffaug-cutout {cutout}: expected a ratio in [0, 1)"
            )));
        }
        let max_d = g.max_d_weight.unwrap_or(1e4);
        if !(max_d.is_finite() && max_d >= 0.0) {
            return Err(CliError::new(format!(
                "--max-d-weight {max_d}: expected a non-negative number"
            )));
        }
        let config = GanConfig {
            perceptual_weight: if lpips.is_some() { pw } else { 0.0 },
            disc_weight: if disc.is_some() { dw } else { 0.0 },
            lpips_start: steps_of(g.lpips_start, "lpips-start", spe)?,
            disc_upd_start: steps_of(g.disc_upd_start, "disc-upd-start", spe)?,
            disc_start: steps_of(g.disc_start, "disc-start", spe)?,
            max_d_weight: max_d,
            diffaug: DiffAug {
                cutout,
                ..DiffAug::default()
            },
        };
        Ok(Some(GanRun {
            lpips,
            disc,
            recipe,
            config,
        }))
    }

    /// The settings as `(key, value)`, for the summary and the checkpoint's metadata.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let mut s = Vec::new();
        if let Some((vgg, lin)) = &self.lpips {
            s.push(("perceptual_weight", c.perceptual_weight.to_string()));
            s.push(("lpips_start_step", c.lpips_start.to_string()));
            s.push(("vgg_weights", vgg.display().to_string()));
            s.push(("lpips_weights", lin.display().to_string()));
        }
        if let Some((p, cfg)) = &self.disc {
            s.push(("disc_weight", c.disc_weight.to_string()));
            s.push(("disc_upd_start_step", c.disc_upd_start.to_string()));
            s.push(("disc_start_step", c.disc_start.to_string()));
            s.push(("max_d_weight", c.max_d_weight.to_string()));
            s.push(("disc_recipe", self.recipe.clone()));
            s.push(("disc_ks", cfg.ks.to_string()));
            s.push(("disc_key_depths", format!("{:?}", cfg.key_depths)));
            s.push(("diffaug_cutout", c.diffaug.cutout.to_string()));
            s.push(("disc_weights", p.display().to_string()));
        }
        s
    }
}
