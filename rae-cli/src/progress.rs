//! Progress bars and log lines for long runs.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `total` steps (hidden when stderr is not a terminal).
pub fn bar(total: u64, prefix: &str) -> ProgressBar {
    // In a data-parallel group only process 0 shows progress.
    if !crate::dist::is_lead() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let style =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(prefix.to_string());
    pb
}

/// Measures throughput between log lines.
#[derive(Debug)]
pub struct Throughput {
    start: Instant,
    items: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            start: Instant::now(),
            items: 0,
        }
    }
}

impl Throughput {
    /// Counts `n` processed items.
    pub fn add(&mut self, n: u64) {
        self.items += n;
    }

    /// Items per second since the start.
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}
