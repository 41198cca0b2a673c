//! Where a RAE is, from the RAE location flags.

use std::path::Path;

use crate::cli::RaeArgs;
use crate::errors::{CliError, CliResult};
use crate::store::RaePaths;

/// Resolves `--rae`, `--encoder`, `--decoder`, ... with `default_dir` as the fallback folder.
pub fn resolve_rae(r: &RaeArgs, default_dir: Option<&Path>) -> CliResult<RaePaths> {
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
