//! `export --diffusers OUT`: a RAE (ours, or any folder `--rae` accepts) written as a
//! diffusers `AutoencoderRAE` folder (see [`crate::store::diffusers`]).

use std::path::Path;

use rae_core::CpuBackend;

use crate::cli::RaeArgs;
use crate::config::resolve_rae;
use crate::errors::CliResult;
use crate::store::{load_rae, save_diffusers_rae};

/// Loads the RAE named by `rae` and writes it to `out`. Runs on the CPU: it only moves
/// weights, and the f32 values are copied unchanged.
pub fn export_diffusers(rae: &RaeArgs, out: &Path) -> CliResult<()> {
    let paths = resolve_rae(rae, None)?;
    let b = CpuBackend::new();
    let model = load_rae(&b, &paths)?;
    save_diffusers_rae(&b, &model, out)
}
