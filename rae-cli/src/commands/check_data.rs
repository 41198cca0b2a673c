//! The data check of `train`: before the first step, every image of an image folder is read
//! once (header limits, then a full decode, see [`crate::image_io::check_image_file`]) on up
//! to [`MAX_THREADS`] cores with a progress bar, and every file that fails is named, so a
//! corrupt or hostile image is found before hours of training rather than when its batch
//! comes up. `train --check-data` runs only the check; `train --skip-check` skips it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::DataChoice;
use crate::data::ImageFolder;
use crate::errors::{CliError, CliResult};
use crate::image_io::check_image_file;
use crate::progress::bar;

/// The most threads the check decodes on (each may hold one image of up to
/// [`crate::image_io::MAX_DECODE_BYTES`] while decoding).
pub const MAX_THREADS: usize = 8;

/// Reads and decodes each file once; returns `(file, error)` of each that fails, in the
/// order of `files`.
pub fn find_bad_images(files: &[&Path], label: &str) -> Vec<(PathBuf, String)> {
    let pb = bar(files.len() as u64, label);
    let next = AtomicUsize::new(0);
    let bad = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_THREADS)
        .min(files.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                if let Err(e) = check_image_file(f) {
                    if let Ok(mut v) = bad.lock() {
                        v.push((i, f.to_path_buf(), e.to_string()));
                    }
                }
                pb.inc(1);
            });
        }
    });
    pb.finish_and_clear();
    let mut bad = bad.into_inner().unwrap_or_else(|e| e.into_inner());
    bad.sort_by_key(|b| b.0);
    bad.into_iter().map(|(_, f, e)| (f, e)).collect()
}

/// Checks every image of an image folder; the error names every bad file.
pub fn check_folder(root: &Path, ds: &ImageFolder) -> CliResult<()> {
    let start = Instant::now();
    let files: Vec<&Path> = ds.paths().collect();
    let bad = find_bad_images(&files, "checking data");
    if bad.is_empty() {
        crate::say!(
            "checked {} images in {}: all readable ({:.1} s)",
            files.len(),
            root.display(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    // The first line names the files (the first ten), one line each below says why.
    let shown: Vec<String> = bad
        .iter()
        .take(10)
        .map(|(f, _)| f.display().to_string())
        .collect();
    let mut msg = format!(
        "{} of the {} images in the data folder {} cannot be used: {}{} (fix or remove them; --skip-check skips this check)",
        bad.len(),
        files.len(),
        root.display(),
        shown.join(", "),
        if bad.len() > shown.len() { ", ..." } else { "" },
    );
    // Each error names its file.
    for (_, e) in &bad {
        msg.push_str(&format!("\n  {e}"));
    }
    Err(CliError::new(msg))
}

/// The check at the start of `train` on an image folder (unless `--skip-check`).
pub fn before_training(data: &DataChoice, ds: &ImageFolder) -> CliResult<()> {
    match &data.folder {
        Some(root) if data.check => check_folder(root, ds),
        _ => Ok(()),
    }
}

/// `train --check-data`: checks `--data` and returns without training.
pub fn check_only(data: &DataChoice) -> CliResult<()> {
    let root = data
        .folder
        .as_deref()
        .ok_or_else(|| CliError::new("--check-data needs --data DIR (an image folder)"))?;
    let ds = ImageFolder::open_indexed(root, data.size(1), data.class_index.as_deref())?;
    check_folder(root, &ds)
}
