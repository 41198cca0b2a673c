//! Where a RAE is, from the RAE location flags.

use std::path::{Path, PathBuf};

use crate::cli::RaeArgs;
use crate::errors::{CliError, CliResult};
use crate::hub::{resolve_path, Want};
use crate::store::RaePaths;

/// Resolves `--rae`, `--encoder`, `--decoder`, ... with `default_dir` as the fallback folder.
/// A location given as a flag may be a Hugging Face hub id (see [`crate::hub`]); the default
/// folder is always a path.
pub fn resolve_rae(r: &RaeArgs, default_dir: Option<&Path>) -> CliResult<RaePaths> {
    let r = &RaeArgs {
        rae: hub_path(&r.rae, Want::Folder, "--rae")?,
        encoder: hub_path(&r.encoder, Want::Folder, "--encoder")?,
        decoder: hub_path(&r.decoder, Want::File, "--decoder")?,
        stats: hub_path(&r.stats, Want::File, "--stats")?,
        ..r.clone()
    };
    let dir = r.rae.clone().or_else(|| default_dir.map(Path::to_path_buf));
    let mut p = match &dir {
        Some(d) => RaePaths::in_dir(d),
        None => {
            let enc = r
                .encoder
                .clone()
                .ok_or_else(|| CliError::new("give --rae DIR or --encoder DIR"))?;
            RaePaths {
                encoder: enc,
                decoder: r.decoder.clone().unwrap_or_default(),
                decoder_config: None,
                stats: None,
                encoder_input_size: None,
            }
        }
    };
    if let Some(e) = &r.encoder {
        p.encoder = e.clone();
    }
    if let Some(d) = &r.decoder {
        p.decoder = d.clone();
    }
    if r.decoder_config.is_some() {
        p.decoder_config = r.decoder_config.clone();
    }
    if let Some(s) = &r.stats {
        p.stats = Some(s.clone());
    }
    if r.encoder_input_size.is_some() {
        p.encoder_input_size = r.encoder_input_size;
    }
    Ok(p)
}

/// A flag's path, or the snapshot path of the hub id it names.
fn hub_path(p: &Option<PathBuf>, want: Want, flag: &str) -> CliResult<Option<PathBuf>> {
    p.as_deref()
        .map(|p| resolve_path(p, want, flag))
        .transpose()
}
