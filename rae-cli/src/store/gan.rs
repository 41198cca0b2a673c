//! The frozen networks of the stage-1 objective from their weight files: LPIPS (a VGG-16
//! state dict and the v0.1 linear heads) and the discriminator's DINO ViT. Every error
//! names the flag and the file.

use std::path::Path;

use rae_core::gan::disc::{DiscConfig, Discriminator};
use rae_core::gan::lpips::{Lpips, VggConfig};
use rae_core::nn::{HostTensors, Init};
use rae_core::Backend;

use super::tensor_file::load_tensor_file;
use crate::errors::{CliResult, Context};

/// A state dict, unwrapped from `state_dict.` / `model.` / `teacher.`-style nesting when
/// that is all the file holds.
fn state_dict(path: &Path) -> CliResult<HostTensors> {
    let t = load_tensor_file(path)?.tensors;
    for wrap in ["state_dict.", "model.", "teacher."] {
        if !t.is_empty() && t.names().all(|n| n.starts_with(wrap)) {
            return Ok(t.sub(wrap));
        }
    }
    Ok(t)
}

/// LPIPS from `--vgg-weights` and `--lpips-weights`; the VGG's layout is read off the file.
pub fn load_lpips<B: Backend>(b: &B, vgg: &Path, lin: &Path) -> CliResult<Lpips<B>> {
    let v = state_dict(vgg).context(format!("--vgg-weights {}", vgg.display()))?;
    let l = state_dict(lin).context(format!("--lpips-weights {}", lin.display()))?;
    let cfg = VggConfig::from_tensors(&v).context(format!(
        "--vgg-weights {}: not a VGG state dict",
        vgg.display()
    ))?;
    let mut lp = Lpips::new(b, &cfg)?;
    lp.load(b, &v, &l).context(format!(
        "--lpips-weights {} (with --vgg-weights {})",
        lin.display(),
        vgg.display()
    ))?;
    Ok(lp)
}

/// The discriminator of shape `cfg`: heads initialised from `seed`, backbone from
/// `--disc-weights`.
pub fn load_discriminator<B: Backend>(
    b: &B,
    path: &Path,
    cfg: DiscConfig,
    seed: u64,
) -> CliResult<Discriminator<B>> {
    let mut d = Discriminator::new(b, &mut Init::new(seed ^ 0xD15C), cfg)?;
    let t = state_dict(path).context(format!("--disc-weights {}", path.display()))?;
    d.load_backbone(b, &t).context(format!(
        "--disc-weights {}: the DINO ViT of --disc-recipe",
        path.display()
    ))?;
    Ok(d)
}
