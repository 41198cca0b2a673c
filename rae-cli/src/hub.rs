//! Hugging Face hub ids wherever a path is accepted (`--rae`, `--encoder`, `--decoder`,
//! `--stats`, `sample --ckpt`, `--guidance-model`).
//!
//! Grammar: `[hf://]org/name[@revision][/path/inside]`; the revision is a branch, a tag or a
//! 40-hex commit (`main` when none is given).
//!
//! Which it is: a path that exists on disk always wins (a local folder `org/name` is a path).
//! Otherwise an argument is read as a hub id when it starts with `hf://`, or when it is
//! relative, does not start with `.` or `~`, and has at least two `/`-separated parts; any
//! other argument stays a path for the loaders. `hf://` forces a hub id; `./org/name` forces
//! a path.
//!
//! Resolution, offline first, through the standard cache (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`):
//! `models--{org}--{name}/refs/{revision}` holds the commit (a 40-hex revision is used
//! directly) and the result is `models--{org}--{name}/snapshots/{commit}/{path/inside}`, which
//! the existing loaders read unchanged.
//!
//! * A file (`--decoder`, `--stats`, checkpoints) found in the cache is used without the
//!   network. Otherwise, with the `hub` feature and unless `HF_HUB_OFFLINE` is set, it is
//!   downloaded into the cache (`HF_ENDPOINT`, `HF_TOKEN`).
//! * A folder (`--rae`, `--encoder`) found in the cache is used as it is, without the
//!   network. A folder not there is listed on the hub and its files fetched:
//!   every `*.json`, `*.safetensors`, `*.pt`, `*.pth` and `*.bin` under it, except a
//!   `.pt`/`.pth`/`.bin` whose `.safetensors` twin is there (`pytorch_model*.bin` beside
//!   `model*.safetensors`), at most [`download::MAX_FILES`] files (name a subfolder of a large
//!   repository).

mod cache;
#[cfg(feature = "hub")]
pub mod download;
pub mod id;

use std::path::{Path, PathBuf};

pub use cache::{cached_commit, lookup, snapshot_dir, Cached, HubEnv};
pub use id::HubId;

use crate::errors::{CliError, CliResult};

/// What a flag expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A folder (an RAE folder, an encoder folder); a file inside is accepted too.
    Folder,
    /// A file: the id must name one inside the repository.
    File,
}

/// Resolves a path flag: an existing path, or anything that does not look like a hub id, is
/// returned as it is; a hub id becomes its snapshot path in the cache (downloaded first with
/// the `hub` feature when missing). `flag` names the option in errors.
pub fn resolve_path(arg: &Path, want: Want, flag: &str) -> CliResult<PathBuf> {
    let Some(s) = arg.to_str() else {
        return Ok(arg.to_path_buf());
    };
    let forced = s.starts_with(id::PREFIX);
    if !forced && (arg.exists() || !id::looks_like_id(s)) {
        return Ok(arg.to_path_buf());
    }
    let shown: String = s.chars().take(200).collect();
    let id = HubId::parse(s).map_err(|why| {
        CliError::new(format!(
            "{flag} {shown:?}: {}not a Hugging Face hub id ([hf://]org/name[@revision][/file]): {why}",
            if forced { "" } else { "no such path on disk, and " }
        ))
    })?;
    if want == Want::File && id.inside.is_empty() {
        return Err(CliError::new(format!(
            "{flag} {shown}: the hub id names the repository {} but a file is needed: add the file inside, e.g. {}/model.safetensors",
            id.repo, shown
        )));
    }
    let env = HubEnv::from_env()?;
    resolve_id(&env, &id, want, flag)
}

/// Resolves a parsed id (see [`resolve_path`]).
pub fn resolve_id(env: &HubEnv, id: &HubId, want: Want, flag: &str) -> CliResult<PathBuf> {
    let cached = lookup(env, id).map_err(|e| e.context(format!("{flag} {id}")))?;
    let can_download = cfg!(feature = "hub") && !env.offline;
    if let Cached::Found(p) = &cached {
        // Offline first: a cached file, or a cached folder that holds anything, is used
        // without the network (a folder the cache has only as an empty shell is fetched).
        let filled = p.is_dir() && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
        if p.is_file() || filled || !can_download {
            return Ok(p.clone());
        }
    }
    if !can_download {
        let looked = match &cached {
            Cached::Missing(p) | Cached::Found(p) => p.clone(),
        };
        let why = if env.offline {
            "HF_HUB_OFFLINE is set, so nothing is downloaded".to_string()
        } else {
            format!(
                "this rae-cli was built without the `hub` feature, so it does not download: rebuild with `--features hub`, or download it into that cache first (e.g. `huggingface-cli download {} --revision {}`)",
                id.repo, id.revision
            )
        };
        return Err(missing(env, id, flag, &looked, &why));
    }
    #[cfg(feature = "hub")]
    {
        let cached_dir = match cached {
            Cached::Found(p) => Some(p),
            Cached::Missing(_) => None,
        };
        download::fetch(env, id, want, flag, cached_dir)
    }
    #[cfg(not(feature = "hub"))]
    {
        let _ = want;
        Err(CliError::new(
            "unreachable: downloads need the `hub` feature",
        ))
    }
}

/// The error for an id that is not in the cache: names the flag, the repository, the
/// revision, the file or folder, the cache folder and the path looked for.
pub fn missing(env: &HubEnv, id: &HubId, flag: &str, looked: &Path, why: &str) -> CliError {
    CliError::new(format!(
        "{flag} {id}: {} of {} at revision {} is not in the Hugging Face cache {} (looked for {}): {why}",
        what(id),
        id.repo,
        id.revision,
        env.repo_dir(id).display(),
        looked.display()
    ))
}

/// `file X`, `folder X` or `the repository`, for messages.
pub fn what(id: &HubId) -> String {
    if id.inside.is_empty() {
        "the repository snapshot".into()
    } else {
        format!("'{}'", id.inside)
    }
}
