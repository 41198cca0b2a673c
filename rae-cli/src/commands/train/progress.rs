//! What both training stages show and write while the core loop runs: the progress bar,
//! the log (a line per interval with the mean loss over it), checkpoints, and the error when
//! a step was not finite. [`CliHooks`] is the command line's side of
//! [`rae_core::train::run`].

use std::path::Path;

use rae_core::train::{LoopHooks, StepOutcome, TrainCheckpoint, Trainer};
use rae_core::{Backend, Error};

use crate::config::StageFiles;
use crate::errors::{CliError, CliResult};
use crate::progress::{bar, Throughput};
use crate::store::{append_line, save_safetensors};

/// Shows `line` and appends it to the run's `train.log` (process 0 of a group only).
pub(super) fn log_line(out: &Path, line: &str) {
    if crate::dist::is_lead() {
        crate::dist::tell(line);
        append_line(&out.join("train.log"), line);
    }
}

/// The bookkeeping both training stages share: the progress bar, throughput, the mean loss
/// over each log interval, and when a checkpoint is due.
pub(super) struct StageProgress<'a> {
    pub(super) pb: indicatif::ProgressBar,
    tp: Throughput,
    window: LossWindow,
    stage: &'static str,
    loss_name: &'static str,
    steps: u64,
    log_every: u64,
    ckpt_every: u64,
    out: &'a Path,
}

impl<'a> StageProgress<'a> {
    pub(super) fn new(
        files: &'a StageFiles,
        stage: &'static str,
        loss_name: &'static str,
        steps: u64,
        start: u64,
    ) -> Self {
        let pb = bar(steps, stage);
        pb.set_position(start);
        StageProgress {
            pb,
            tp: Throughput::default(),
            window: LossWindow::default(),
            stage,
            loss_name,
            steps,
            log_every: files.log_every,
            ckpt_every: files.ckpt_every,
            out: &files.out,
        }
    }

    /// Records the finished step `done` (a batch of `batch` items): updates the bar, writes a
    /// log line at each interval.
    fn record(&mut self, done: u64, batch: usize, out: &StepOutcome) {
        let (loss, rep) = (out.loss, &out.report);
        self.tp.add(batch as u64);
        self.pb.set_position(done);
        self.pb.set_message(format!(
            "{} {loss:.4} lr {:.2e} {:.1} img/s",
            self.loss_name,
            rep.lr,
            self.tp.rate()
        ));
        self.window.push(loss, &out.terms);
        if done.is_multiple_of(self.log_every) || done == self.steps {
            let (loss_mean, terms) = self.window.take();
            // The named terms when there is more than the loss itself (stage 1 with LPIPS
            // and the GAN: L1, LPIPS, G, λ, D, the discriminator's accuracy and rate).
            let terms = if terms.len() > 1 { terms } else { Vec::new() };
            let extra: String = terms.iter().map(|(n, v)| format!(" {n} {v:.4}")).collect();
            let line = format!(
                "{} step {done}/{} {} {:.5} lr {:.3e} grad-norm {:.3} {:.1} img/s{extra}",
                self.stage,
                self.steps,
                self.loss_name,
                loss_mean,
                rep.lr,
                rep.grad_norm,
                self.tp.rate()
            );
            self.pb.suspend(|| log_line(self.out, &line));
            if crate::dist::is_lead() {
                append_line(
                    &self.out.join("metrics.jsonl"),
                    &metrics_line(self.stage, done, loss_mean, rep, self.tp.rate(), &terms),
                );
            }
        }
    }
}

/// One line of `metrics.jsonl`: the logged numbers at full precision, for plots and tools
/// (the loss is the mean over the log interval and, in a group, over the processes).
fn metrics_line(
    stage: &str,
    step: u64,
    loss: f64,
    rep: &rae_core::train::StepReport,
    rate: f64,
    terms: &[(&'static str, f64)],
) -> String {
    use rae_core::json::JsonValue;
    let mut fields = vec![
        ("stage", JsonValue::from(stage)),
        ("step", step.into()),
        ("loss", loss.into()),
        ("lr", rep.lr.into()),
        ("grad_norm", (rep.grad_norm as f64).into()),
        ("images_per_s", rate.into()),
    ];
    fields.extend(terms.iter().map(|(n, v)| (*n, JsonValue::from(*v))));
    JsonValue::object(fields).to_string()
}

/// Means of the loss and of each named term since the last log line (single-batch losses
/// are noisy).
#[derive(Debug, Default)]
struct LossWindow {
    sum: f64,
    n: usize,
    terms: Vec<(&'static str, f64)>,
}

impl LossWindow {
    fn push(&mut self, loss: f32, terms: &[(&'static str, f32)]) {
        self.sum += loss as f64;
        self.n += 1;
        for &(name, v) in terms {
            match self.terms.iter_mut().find(|t| t.0 == name) {
                Some(t) => t.1 += v as f64,
                None => self.terms.push((name, v as f64)),
            }
        }
    }

    fn take(&mut self) -> (f64, Vec<(&'static str, f64)>) {
        let n = self.n.max(1) as f64;
        let m = self.sum / n;
        let terms = self.terms.iter().map(|&(k, v)| (k, v / n)).collect();
        *self = LossWindow::default();
        (m, terms)
    }
}

fn stopped(e: Error, ckpt: &Path, last: Option<u64>) -> CliError {
    let keep = if let (true, Some(last)) = (ckpt.exists(), last) {
        format!(
            "the last good checkpoint {} (step {last}) is kept",
            ckpt.display()
        )
    } else {
        "no checkpoint had been written yet".to_string()
    };
    CliError::new(format!(
        "training stopped: {e}; {keep}. Lower the learning rate (--lr) or check the data and resume with --resume."
    ))
}

/// Where a batch comes from: called with the number of steps already taken.
pub(super) type BatchFn<'a, B, T> =
    Box<dyn FnMut(&B, u64) -> CliResult<<T as Trainer<B>>::Batch> + 'a>;
/// What runs after each step besides progress and logging (sample grids).
pub(super) type AfterFn<'a, B, T> =
    Box<dyn FnMut(&B, &T, u64, &StageProgress<'_>) -> CliResult<()> + 'a>;

/// The command line's hooks of the core training loop.
pub(super) struct CliHooks<'a, B: Backend, T: Trainer<B>> {
    /// Progress bar and log.
    pub prog: StageProgress<'a>,
    /// The checkpoint file.
    pub ckpt: &'a Path,
    /// Items per step (for the throughput).
    pub batch_size: usize,
    /// The data.
    pub batch: BatchFn<'a, B, T>,
    /// Sample grids and the like.
    pub after: AfterFn<'a, B, T>,
}

impl<B: Backend, T: Trainer<B>> LoopHooks<B, T> for CliHooks<'_, B, T> {
    type Error = CliError;

    fn batch(&mut self, b: &B, step: u64) -> CliResult<T::Batch> {
        (self.batch)(b, step)
    }

    fn after_step(&mut self, b: &B, trainer: &T, done: u64, out: &StepOutcome) -> CliResult<()> {
        self.prog.record(done, self.batch_size, out);
        (self.after)(b, trainer, done, &self.prog)
    }

    fn checkpoint_due(&self, done: u64) -> bool {
        done.is_multiple_of(self.prog.ckpt_every)
    }

    fn save(&mut self, ck: &TrainCheckpoint, _done: u64) -> CliResult<()> {
        if crate::dist::is_lead() {
            save_safetensors(self.ckpt, &ck.tensors, &ck.metadata)?;
        }
        Ok(())
    }

    fn stopped(&mut self, e: Error, last_saved: Option<u64>) -> CliError {
        stopped(e, self.ckpt, last_saved)
    }
}
