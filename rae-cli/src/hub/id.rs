//! The hub id grammar: `[hf://]org/name[@revision][/path/inside]`.
//!
//! Every part is checked before it becomes a cache folder, a file name or a URL, so a hostile
//! id (`../..`, empty parts, odd characters, absurd lengths) is an error, never a path outside
//! the cache or a panic.

use std::fmt;

/// The explicit prefix: what follows is a hub id, never a path.
pub const PREFIX: &str = "hf://";
/// The revision when none is given.
pub const DEFAULT_REVISION: &str = "main";
/// Longest organisation or repository name (the hub's own limit is 96).
pub const MAX_NAME: usize = 96;
/// Longest revision.
pub const MAX_REVISION: usize = 128;
/// Longest path inside a repository, and longest part of it.
pub const MAX_INSIDE: usize = 1024;
/// Longest part of a path inside a repository.
pub const MAX_PART: usize = 255;
/// Most parts of a path inside a repository.
pub const MAX_DEPTH: usize = 32;

/// A parsed hub id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A branch, a tag or a 40-hex commit (`main` when none is given).
    pub revision: String,
    /// Whether the revision was written out (`@...`).
    pub explicit_revision: bool,
    /// The file or folder inside the repository, `/`-separated; empty for the whole repository.
    pub inside: String,
}

impl HubId {
    /// Parses `[hf://]org/name[@revision][/path/inside]`.
    pub fn parse(spec: &str) -> Result<HubId, String> {
        let s = spec.strip_prefix(PREFIX).unwrap_or(spec);
        if s.len() > 2 * MAX_NAME + MAX_REVISION + MAX_INSIDE + 4 {
            return Err(format!("it is {} bytes long", s.len()));
        }
        let mut parts = s.splitn(3, '/');
        let org = parts.next().unwrap_or("");
        let Some(name_rev) = parts.next() else {
            return Err("a hub id has the form org/name".into());
        };
        let inside = parts.next().unwrap_or("");
        let (name, revision, explicit_revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, r, true),
            None => (name_rev, DEFAULT_REVISION, false),
        };
        check_name("organisation", org)?;
        check_name("repository name", name)?;
        check_revision(revision)?;
        let inside = inside.trim_end_matches('/');
        check_inside(inside)?;
        Ok(HubId {
            repo: format!("{org}/{name}"),
            revision: revision.to_string(),
            explicit_revision,
            inside: inside.to_string(),
        })
    }

    /// The cache folder of the repository, `models--{org}--{name}`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// Whether the revision is a full commit hash (used as the snapshot directly).
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.revision)
    }

    /// The same id with the path inside replaced.
    pub fn with_inside(&self, inside: &str) -> HubId {
        HubId {
            inside: inside.to_string(),
            ..self.clone()
        }
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)?;
        if !self.inside.is_empty() {
            write!(f, "/{}", self.inside)?;
        }
        Ok(())
    }
}

/// Whether `s` is a 40-character lowercase hex commit hash.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Whether `arg` (not a path on disk) should be read as a hub id: it has the `hf://` prefix, or
/// it is relative, does not start with `.` or `~`, and has at least two `/`-separated parts.
/// Anything else is left to the loaders as a path.
pub fn looks_like_id(arg: &str) -> bool {
    if arg.starts_with(PREFIX) {
        return true;
    }
    !arg.starts_with(['/', '.', '~', '\\'])
        && !arg.contains('\\')
        && !arg.contains(':')
        && arg.split('/').filter(|p| !p.is_empty()).count() >= 2
}

/// `org` and `name`: ASCII letters, digits, `-`, `_`, `.`; starts with a letter or digit; no
/// `--` or `..` (they would make the cache folder ambiguous); not ending in `-` or `.`.
fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.len() > MAX_NAME {
        return Err(format!("the {what} is longer than {MAX_NAME} characters"));
    }
    let ok_chars = s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let first_ok = s.as_bytes()[0].is_ascii_alphanumeric();
    if !ok_chars || !first_ok || s.contains("--") || s.contains("..") || s.ends_with(['-', '.']) {
        return Err(format!(
            "the {what} {s:?} is not a hub name (letters, digits, '-', '_', '.'; starting with a letter or digit; no '--' or '..')"
        ));
    }
    Ok(())
}

/// A branch, tag or commit: ASCII letters, digits, `-`, `_`, `.`; not starting with `.`, no
/// `..`. (Revisions holding `/`, such as `refs/pr/1`, are not expressible.)
fn check_revision(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the revision after '@' is empty".into());
    }
    if s.len() > MAX_REVISION {
        return Err(format!(
            "the revision is longer than {MAX_REVISION} characters"
        ));
    }
    let ok_chars = s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok_chars || s.starts_with('.') || s.contains("..") {
        return Err(format!(
            "the revision {s:?} is not a branch, tag or commit (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// The path inside: `/`-separated parts of ASCII letters, digits and `-_.+=,@`; no empty,
/// `.` or `..` part; bounded length and depth.
pub fn check_inside(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > MAX_INSIDE {
        return Err(format!(
            "the path inside the repository is longer than {MAX_INSIDE} characters"
        ));
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(format!(
            "the path inside the repository has more than {MAX_DEPTH} parts"
        ));
    }
    for p in parts {
        if p.is_empty() || p == "." || p == ".." {
            return Err(format!(
                "the path inside the repository {s:?} has an empty, '.' or '..' part"
            ));
        }
        if p.len() > MAX_PART {
            return Err(format!(
                "a part of the path inside the repository is longer than {MAX_PART} characters"
            ));
        }
        let ok = p.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+' | b'=' | b',' | b'@')
        });
        if !ok {
            return Err(format!(
                "the path inside the repository {s:?} holds a character other than letters, digits and -_.+=,@"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let id = HubId::parse("facebook/dinov2-with-registers-base").unwrap();
        assert_eq!(id.repo, "facebook/dinov2-with-registers-base");
        assert_eq!(id.revision, "main");
        assert!(!id.explicit_revision);
        assert_eq!(id.inside, "");
        assert_eq!(
            id.cache_folder(),
            "models--facebook--dinov2-with-registers-base"
        );

        let id = HubId::parse(
            "nyu-visionx/RAE-collections@main/decoders/dinov2/wReg_base/ViTXL_n08/model.pt",
        )
        .unwrap();
        assert_eq!(id.repo, "nyu-visionx/RAE-collections");
        assert_eq!(id.revision, "main");
        assert!(id.explicit_revision);
        assert_eq!(id.inside, "decoders/dinov2/wReg_base/ViTXL_n08/model.pt");

        let h = "0123456789abcdef0123456789abcdef01234567";
        let id = HubId::parse(&format!("hf://a/b@{h}/x/")).unwrap();
        assert!(id.is_commit());
        assert_eq!(id.inside, "x");
        assert_eq!(id.to_string(), format!("a/b@{h}/x"));
        assert!(!HubId::parse("a/b@v1.0").unwrap().is_commit());
    }

    #[test]
    fn rejects_hostile_ids() {
        let long = "a".repeat(100_000);
        let bad = [
            "a",
            "/b",
            "a/",
            "../..",
            "a/..",
            "./b",
            "a/b/../../etc/passwd",
            "a/b/./x",
            "a/b//x",
            "a/b@",
            "a/b@../x",
            "a/b@.hidden",
            "a/b@x y",
            "a/b@x\0",
            "a--b/c",
            "a/b..c",
            "-a/b",
            "a/b-",
            "a b/c",
            "a/b/c d",
            "a/b/c?x",
            "a/b/c#x",
            "a/b/%2e%2e",
            "a/b/c\\d",
            long.as_str(),
        ];
        for s in bad {
            assert!(HubId::parse(s).is_err(), "{s:?} should be rejected");
        }
        assert!(HubId::parse(&format!("a/{long}")).is_err());
        assert!(HubId::parse(&format!("a/b@{long}")).is_err());
        assert!(HubId::parse(&format!("a/b/{}", ["x"; 40].join("/"))).is_err());
        assert!(HubId::parse(&format!("a/b/{}", "x".repeat(300))).is_err());
    }

    #[test]
    fn tells_ids_from_paths() {
        assert!(looks_like_id("org/name"));
        assert!(looks_like_id("org/name@v1/file.pt"));
        assert!(looks_like_id("hf://org"));
        for p in [
            "name",
            "/abs/path",
            "./org/name",
            "../org/name",
            "~/x/y",
            "C:\\x\\y",
            "c:/x",
        ] {
            assert!(!looks_like_id(p), "{p:?}");
        }
    }
}
