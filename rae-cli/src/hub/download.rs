//! Downloads into the Hugging Face cache with the `hf-hub` crate (blocking, feature `hub`):
//! one file by name, or the files a folder needs after listing the repository.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::cache::{inside, snapshot_dir, write_ref, HubEnv};
use super::id::{check_inside, is_commit_hash, HubId};
use super::{missing, what, Want};
use crate::errors::{CliError, CliResult};

/// Most files fetched for one folder id.
pub const MAX_FILES: usize = 256;

/// Fetches `id` into the cache and returns its snapshot path. `cached_dir`: a snapshot folder
/// already in the cache, used as it is when the hub cannot be listed.
pub fn fetch(
    env: &HubEnv,
    id: &HubId,
    want: Want,
    flag: &str,
    cached_dir: Option<PathBuf>,
) -> CliResult<PathBuf> {
    let api = api(env)?;
    if want == Want::File {
        return fetch_file(env, &api, id, &id.revision, flag);
    }
    let repo = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        id.revision.clone(),
    ));
    let listed = guarded(|| repo.info()).and_then(|r| r.map_err(|e| explain(env, &e)));
    let info = match (listed, cached_dir) {
        (Ok(info), _) => info,
        (Err(e), Some(dir)) => {
            eprintln!(
                "hub: could not list {id} ({e}); using the cached {}",
                dir.display()
            );
            return Ok(dir);
        }
        (Err(e), None) => {
            let looked = super::lookup(env, id)
                .map(|c| match c {
                    super::Cached::Missing(p) | super::Cached::Found(p) => p,
                })
                .map_err(|e| e.context(format!("{flag} {id}")))?;
            return Err(missing(
                env,
                id,
                flag,
                &looked,
                &format!("listing it on {} failed: {e}", env.endpoint),
            ));
        }
    };
    let sha = info.sha.trim().to_string();
    if !is_commit_hash(&sha) {
        return Err(CliError::new(format!(
            "{flag} {id}: the hub answered a commit {:?} that is not a 40-hex hash",
            sha.chars().take(64).collect::<String>()
        )));
    }
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if !id.inside.is_empty() && names.contains(&id.inside) {
        let path = fetch_file(env, &api, id, &sha, flag)?;
        write_ref(env, id, &sha)?;
        return Ok(path);
    }
    let files = select_files(&names, &id.inside).map_err(|why| {
        CliError::new(format!(
            "{flag} {id}: {why} ({} of {} at revision {} lists {} files)",
            what(id),
            id.repo,
            id.revision,
            names.len()
        ))
    })?;
    let snap = snapshot_dir(env, id, &sha);
    for f in &files {
        let file_id = id.with_inside(f);
        if inside(&snap, &file_id).exists() {
            continue;
        }
        fetch_file(env, &api, &file_id, &sha, flag)?;
    }
    write_ref(env, id, &sha)?;
    Ok(inside(&snap, id))
}

/// Downloads the file `id.inside` at `revision` (the id's own, or the listed commit).
fn fetch_file(
    env: &HubEnv,
    api: &Api,
    id: &HubId,
    revision: &str,
    flag: &str,
) -> CliResult<PathBuf> {
    eprintln!("hub: downloading {} from {}", id, env.endpoint);
    let repo = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        revision.to_string(),
    ));
    let got = guarded(|| repo.download(&id.inside)).and_then(|r| r.map_err(|e| explain(env, &e)));
    got.map_err(|e| {
        let looked = match super::cached_commit(env, id) {
            Ok(Some(c)) => inside(&snapshot_dir(env, id, &c), id),
            _ => env.repo_dir(id).join("refs").join(&id.revision),
        };
        missing(
            env,
            id,
            flag,
            &looked,
            &format!("downloading it from {} failed: {e}", env.endpoint),
        )
    })
}

/// The client: the cache of `env`, its endpoint and token, progress bars on a terminal.
fn api(env: &HubEnv) -> CliResult<Api> {
    ApiBuilder::from_cache(Cache::new(env.cache.clone()))
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(true)
        .build()
        .map_err(|e| CliError::new(format!("hub client for {}: {e}", env.endpoint)))
}

/// Runs an `hf-hub` call, turning a panic inside it (a malformed answer) into an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| "the hub client failed on the answer".into())
}

/// An `hf-hub` error in words: the HTTP status and the hub's error code, or the transport.
fn explain(env: &HubEnv, e: &ApiError) -> String {
    match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, resp) => {
                let detail = resp
                    .header("x-error-message")
                    .or_else(|| resp.header("x-error-code"))
                    .map(|m| format!(" ({})", m.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                let hint = match code {
                    401 | 403 if env.token.is_none() => {
                        ": private, gated or absent (set HF_TOKEN for a private or gated one)"
                    }
                    401 | 403 => ": private, gated or absent for this token",
                    404 => ": not found",
                    _ => "",
                };
                format!("HTTP {code}{detail}{hint}")
            }
            ureq::Error::Transport(t) => format!("could not reach the hub: {t}"),
        },
        other => other.to_string(),
    }
}

/// The files a folder id fetches among the repository's `names` under `prefix` (empty: the
/// whole repository); see the module [`super`] docs for the rule.
pub fn select_files(names: &[String], prefix: &str) -> Result<Vec<String>, String> {
    let under =
        |n: &str| prefix.is_empty() || n.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'));
    let kept: Vec<&String> = names
        .iter()
        .filter(|n| under(n) && check_inside(n).is_ok())
        .filter(|n| {
            let ext = n.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            matches!(ext, "json" | "safetensors" | "pt" | "pth" | "bin")
        })
        .collect();
    let has = |n: &str| kept.iter().any(|k| k.as_str() == n);
    let files: Vec<String> = kept
        .iter()
        .filter(|n| {
            let Some((stem, ext)) = n.rsplit_once('.') else {
                return true;
            };
            if !matches!(ext, "pt" | "pth" | "bin") {
                return true;
            }
            let (dir, base) = stem.rsplit_once('/').map_or(("", stem), |(d, b)| (d, b));
            let join = |b: &str| {
                if dir.is_empty() {
                    b.to_string()
                } else {
                    format!("{dir}/{b}")
                }
            };
            let twin = has(&join(&format!("{base}.safetensors")));
            let hf_twin = base
                .strip_prefix("pytorch_model")
                .is_some_and(|rest| has(&join(&format!("model{rest}.safetensors"))));
            !twin && !hf_twin
        })
        .map(|n| n.to_string())
        .collect();
    if files.is_empty() {
        return Err(format!(
            "no .json, .safetensors, .pt or .bin file under {}",
            if prefix.is_empty() {
                "the repository"
            } else {
                prefix
            }
        ));
    }
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} files to fetch (more than {MAX_FILES}): name a subfolder",
            files.len()
        ));
    }
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn folder_files_are_chosen_by_kind_and_twin() {
        let repo = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "preprocessor_config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tf_model.h5",
            "rae/encoder/config.json",
            "rae/encoder/model.safetensors",
            "rae/decoder.safetensors",
            "rae/decoder.pt",
            "rae/stat.pt",
            "rae/../evil.json",
            "raeX/config.json",
        ]);
        assert_eq!(
            select_files(&repo, "").unwrap(),
            names(&[
                "config.json",
                "preprocessor_config.json",
                "model.safetensors",
                "rae/encoder/config.json",
                "rae/encoder/model.safetensors",
                "rae/decoder.safetensors",
                "rae/stat.pt",
                "raeX/config.json",
            ])
        );
        assert_eq!(
            select_files(&repo, "rae").unwrap(),
            names(&[
                "rae/encoder/config.json",
                "rae/encoder/model.safetensors",
                "rae/decoder.safetensors",
                "rae/stat.pt",
            ])
        );
        assert!(select_files(&repo, "nothing").is_err());
        let many: Vec<String> = (0..300).map(|i| format!("f{i}.json")).collect();
        assert!(select_files(&many, "").unwrap_err().contains("subfolder"));
    }
}
