//! The Hugging Face cache, read offline: where it is (from the environment), and where a
//! hub id lies in it (`models--{org}--{name}/refs/{revision}` holds the commit,
//! `models--{org}--{name}/snapshots/{commit}/...` the files).

use std::path::{Path, PathBuf};

use super::id::{is_commit_hash, HubId};
use crate::errors::{CliError, CliResult};

/// The default endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The hub settings of this process, from `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME`,
/// `HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH` and `HF_HUB_OFFLINE`.
#[derive(Clone)]
pub struct HubEnv {
    /// The cache folder (absolute).
    pub cache: PathBuf,
    /// The endpoint, without a trailing `/`.
    pub endpoint: String,
    /// The access token, if any.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: never download.
    pub offline: bool,
}

impl std::fmt::Debug for HubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEnv")
            .field("cache", &self.cache)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubEnv {
    /// Reads the settings from the environment.
    pub fn from_env() -> CliResult<HubEnv> {
        Self::from_vars(&|k| std::env::var_os(k).filter(|v| !v.is_empty()))
    }

    /// Reads the settings through `var` (the environment, or a table in tests).
    pub fn from_vars(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> CliResult<HubEnv> {
        let home = || -> CliResult<PathBuf> {
            if let Some(h) = var("HF_HOME") {
                return Ok(PathBuf::from(h));
            }
            if let Some(x) = var("XDG_CACHE_HOME") {
                return Ok(PathBuf::from(x).join("huggingface"));
            }
            var("HOME")
                .map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
                .ok_or_else(|| {
                    CliError::new(
                        "hub ids: no Hugging Face cache folder (set HF_HUB_CACHE or HF_HOME)",
                    )
                })
        };
        let cache = match var("HF_HUB_CACHE") {
            Some(c) => PathBuf::from(c),
            None => home()?.join("hub"),
        };
        let cache = absolute(&cache)?;
        let endpoint = match var("HF_ENDPOINT") {
            Some(e) => check_endpoint(&e.to_string_lossy())?,
            None => DEFAULT_ENDPOINT.to_string(),
        };
        let token = match var("HF_TOKEN") {
            Some(t) => Some(t.to_string_lossy().trim().to_string()),
            None => {
                let path = match var("HF_TOKEN_PATH") {
                    Some(p) => Some(PathBuf::from(p)),
                    None => home().ok().map(|h| h.join("token")),
                };
                path.and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_string())
            }
        }
        .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_graphic()));
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.to_string_lossy().trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        });
        Ok(HubEnv {
            cache,
            endpoint,
            token,
            offline,
        })
    }

    /// The repository's folder in the cache.
    pub fn repo_dir(&self, id: &HubId) -> PathBuf {
        self.cache.join(id.cache_folder())
    }
}

/// A relative cache folder made absolute (the cache's links are relative to it).
fn absolute(p: &Path) -> CliResult<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| CliError::new(format!("hub cache {}: {e}", p.display())))
}

/// `HF_ENDPOINT`: an `http://` or `https://` URL of printable ASCII without spaces.
fn check_endpoint(e: &str) -> CliResult<String> {
    let e = e.trim().trim_end_matches('/');
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && e.len() <= 2048
            && r.bytes()
                .all(|c| c.is_ascii_graphic() && !matches!(c, b'?' | b'#' | b'"' | b'\\'))
    });
    if !ok {
        return Err(CliError::new(format!(
            "HF_ENDPOINT {e:?} is not an http:// or https:// URL"
        )));
    }
    Ok(e.to_string())
}

/// Where an id lies in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The snapshot path (file or folder), present.
    Found(PathBuf),
    /// Not there; the path that was looked for (a `refs/` file or a snapshot path).
    Missing(PathBuf),
}

/// The commit a revision points to in the cache: a 40-hex revision itself, else the
/// content of `refs/{revision}` (`None` when that file is absent).
pub fn cached_commit(env: &HubEnv, id: &HubId) -> CliResult<Option<String>> {
    if id.is_commit() {
        return Ok(Some(id.revision.clone()));
    }
    let refs = env.repo_dir(id).join("refs").join(&id.revision);
    match std::fs::read(&refs) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
            let commit = text.trim();
            if is_commit_hash(commit) {
                Ok(Some(commit.to_string()))
            } else {
                Err(CliError::new(format!(
                    "hub cache {}: holds {:?}, not a commit hash",
                    refs.display(),
                    commit.chars().take(64).collect::<String>()
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::errors::io_error("reading", &refs, &e)),
    }
}

/// The snapshot folder of a commit.
pub fn snapshot_dir(env: &HubEnv, id: &HubId, commit: &str) -> PathBuf {
    env.repo_dir(id).join("snapshots").join(commit)
}

/// The path of `id.inside` in a snapshot folder.
pub fn inside(snapshot: &Path, id: &HubId) -> PathBuf {
    id.inside
        .split('/')
        .filter(|p| !p.is_empty())
        .fold(snapshot.to_path_buf(), |p, part| p.join(part))
}

/// Looks `id` up in the cache, without the network.
pub fn lookup(env: &HubEnv, id: &HubId) -> CliResult<Cached> {
    let Some(commit) = cached_commit(env, id)? else {
        return Ok(Cached::Missing(
            env.repo_dir(id).join("refs").join(&id.revision),
        ));
    };
    let path = inside(&snapshot_dir(env, id, &commit), id);
    Ok(if path.exists() {
        Cached::Found(path)
    } else {
        Cached::Missing(path)
    })
}

/// Records `refs/{revision}` = `commit` (after a download by commit).
#[cfg(any(feature = "hub", test))]
pub fn write_ref(env: &HubEnv, id: &HubId, commit: &str) -> CliResult<()> {
    if id.is_commit() {
        return Ok(());
    }
    let refs = env.repo_dir(id).join("refs");
    std::fs::create_dir_all(&refs).map_err(|e| crate::errors::io_error("creating", &refs, &e))?;
    let file = refs.join(&id.revision);
    std::fs::write(&file, commit).map_err(|e| crate::errors::io_error("writing", &file, &e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env_of(pairs: &[(&str, &str)]) -> CliResult<HubEnv> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        HubEnv::from_vars(&move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn cache_folder_follows_the_environment() {
        let e = env_of(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")]).unwrap();
        assert_eq!(e.cache, PathBuf::from("/c"));
        let e = env_of(&[("HF_HOME", "/h"), ("HOME", "/u")]).unwrap();
        assert_eq!(e.cache, PathBuf::from("/h/hub"));
        let e = env_of(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/u")]).unwrap();
        assert_eq!(e.cache, PathBuf::from("/x/huggingface/hub"));
        let e = env_of(&[("HOME", "/u")]).unwrap();
        assert_eq!(e.cache, PathBuf::from("/u/.cache/huggingface/hub"));
        assert_eq!(e.endpoint, DEFAULT_ENDPOINT);
        assert!(!e.offline && e.token.is_none());
        assert!(env_of(&[]).is_err());
        let e = env_of(&[("HF_HUB_CACHE", "rel")]).unwrap();
        assert!(e.cache.is_absolute());
    }

    #[test]
    fn endpoint_offline_and_token() {
        let e = env_of(&[
            ("HOME", "/u"),
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_HUB_OFFLINE", "True"),
            ("HF_TOKEN", " hf_abc\n"),
        ])
        .unwrap();
        assert_eq!(e.endpoint, "http://127.0.0.1:8080");
        assert!(e.offline);
        assert_eq!(e.token.as_deref(), Some("hf_abc"));
        assert!(!format!("{e:?}").contains("hf_abc"));
        for bad in [
            "ftp://x",
            "huggingface.co",
            "http://",
            "http://a b",
            "http://x?y",
        ] {
            assert!(
                env_of(&[("HOME", "/u"), ("HF_ENDPOINT", bad)]).is_err(),
                "{bad}"
            );
        }
        let e = env_of(&[("HOME", "/u"), ("HF_HUB_OFFLINE", "0")]).unwrap();
        assert!(!e.offline);
    }

    #[test]
    fn lookup_reads_refs_and_snapshots() {
        let root = std::env::temp_dir().join(format!("rae-hub-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let e = env_of(&[("HF_HUB_CACHE", root.to_str().unwrap())]).unwrap();
        let h = "89abcdef0123456789abcdef0123456789abcdef";
        let id = HubId::parse("org/name/sub/f.json").unwrap();
        let repo = root.join("models--org--name");
        assert_eq!(
            lookup(&e, &id).unwrap(),
            Cached::Missing(repo.join("refs/main"))
        );
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{h}\n")).unwrap();
        let want = repo.join("snapshots").join(h).join("sub").join("f.json");
        assert_eq!(lookup(&e, &id).unwrap(), Cached::Missing(want.clone()));
        std::fs::create_dir_all(want.parent().unwrap()).unwrap();
        std::fs::write(&want, "{}").unwrap();
        assert_eq!(lookup(&e, &id).unwrap(), Cached::Found(want.clone()));
        let by_hash = HubId::parse(&format!("org/name@{h}/sub")).unwrap();
        assert_eq!(
            lookup(&e, &by_hash).unwrap(),
            Cached::Found(want.parent().unwrap().to_path_buf())
        );
        // A refs file that is not a commit is an error, not a path.
        std::fs::write(repo.join("refs/evil"), "../../../etc").unwrap();
        let evil = HubId::parse("org/name@evil/x").unwrap();
        let err = lookup(&e, &evil).unwrap_err().to_string();
        assert!(err.contains("not a commit hash"), "{err}");
        write_ref(&e, &HubId::parse("org/name@v2").unwrap(), h).unwrap();
        assert_eq!(std::fs::read_to_string(repo.join("refs/v2")).unwrap(), h);
        let _ = std::fs::remove_dir_all(&root);
    }
}
