//! The weights of the FID Inception-v3 (`rae_core::models::inception`): the PyTorch state
//! dict `pt_inception-2015-12-05-6726825d.pth` of pytorch-fid (or torch-fidelity's
//! `weights-inception-2015-12-05-6726825d.pth`, the same tensors), read with our `.pt`
//! reader, or a safetensors file with the same names (`rae-cli convert` writes one).

use std::path::Path;

use rae_core::models::InceptionV3;
use rae_core::nn::HostTensors;
use rae_core::Backend;

use super::tensor_file::load_tensor_file;
use crate::errors::{CliResult, Context};

/// Loads the FID Inception from a `.pt`/`.pth` state dict or a safetensors file. A state dict
/// nested under `state_dict.` or saved from `nn.DataParallel` (`module.`) is accepted; a
/// missing tensor, a wrong shape or a tensor of another network is an error naming it.
pub fn load_inception<B: Backend>(b: &B, path: &Path) -> CliResult<InceptionV3<B>> {
    let file = load_tensor_file(path)?;
    let tensors = unwrap_state_dict(file.tensors);
    InceptionV3::from_tensors(b, &tensors).context(format!(
        "loading the FID Inception-v3 weights from {} (expected pytorch-fid's pt_inception-2015-12-05-6726825d.pth or a safetensors copy)",
        path.display()
    ))
}

/// The tensors under a `state_dict.` key, else the tensors with a `module.` prefix removed.
fn unwrap_state_dict(t: HostTensors) -> HostTensors {
    let sub = t.sub("state_dict.");
    let t = if sub.is_empty() { t } else { sub };
    if t.names().all(|n| n.starts_with("module.")) && !t.is_empty() {
        t.strip_prefix("module.")
    } else {
        t
    }
}
