//! Writing files so that an interrupted or failed write never destroys the previous
//! version: write a temporary file beside the target, flush it to disk, then rename. Also the
//! two writes that are not atomic on purpose: the probe of an output folder and the
//! appended training log.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rae_core::nn::HostTensors;

use crate::errors::{io_error, CliError, CliResult};

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| String::from("out"));
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Removes the temporary files that earlier writes of `path` left when they were killed:
/// only names of our own pattern (`.NAME.tmp-PID`), only for processes that no longer run
/// (on Linux, `/proc/PID` tells; elsewhere, any PID but ours). Best effort: a file that
/// cannot be removed is left alone.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let n = file_name.to_string_lossy();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive =
            pid == me || (cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists());
        if !alive && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename). On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CliResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| io_error("cannot create the output folder", dir, &e))?;
    }
    remove_stale_temps(path);
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot write", path, &e)
            .context("the previous version (if any) is unchanged"));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("cannot move the new file into place at", path, &e)
    })
}

/// Writes named tensors and metadata as a safetensors file, atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &HostTensors,
    metadata: &[(String, String)],
) -> CliResult<()> {
    let bytes = tensors
        .to_safetensors(metadata)
        .map_err(|e| CliError::from(e).context(format!("serialising {}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Checks early that `dir` can be created and written, so a run fails before training
/// instead of at its first checkpoint.
pub fn check_writable_dir(dir: &Path) -> CliResult<()> {
    fs::create_dir_all(dir).map_err(|e| io_error("cannot create the output folder", dir, &e))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"ok")
        .map_err(|e| io_error("the output folder is not writable:", dir, &e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Appends `line` to the text file `path` (the training log), best effort: a log that
/// cannot be written never stops a run.
pub fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
