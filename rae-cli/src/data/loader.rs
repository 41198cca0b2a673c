//! Batches loaded ahead of the training step by a pool of threads: the images of a dataset
//! (decoded and centre-cropped) or the latents of a cache. The batch of each step, and which
//! items it holds, come from a plan that depends on the step alone ([`super::BatchOrder`]),
//! and every item lands in its own slot of its batch, so the batches are exactly those of a
//! sequential load whatever the timing of the threads; an error is reported for the batch
//! that holds the failing item, by the first failing slot.
//!
//! At most `ahead` batches beyond the one asked for are in flight (bounded memory). Asking
//! for a step other than the next one (a resume, a new plan) drops what was loaded ahead.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::Dataset;
use crate::errors::{CliError, CliResult};
use crate::store::{LatentCache, ShardSet};

/// Batches loaded ahead of the one in use (besides the one being waited for).
pub const DEFAULT_AHEAD: usize = 2;

/// Items the loader can fetch: fixed-size `f32` records with labels.
pub trait ItemSource: Sync {
    /// Values per item.
    fn item_len(&self) -> usize;
    /// Label of item `i`.
    fn item_label(&self, i: usize) -> u32;
    /// Item `i` (mirrored when `flip`, for images), exactly `item_len` values.
    fn load_item(&self, i: usize, flip: bool) -> CliResult<Vec<f32>>;
}

/// The images of a dataset as loader items (`[3, S, S]` each).
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct Images<'a>(pub &'a dyn Dataset);

impl ItemSource for Images<'_> {
    fn item_len(&self) -> usize {
        3 * self.0.image_size() * self.0.image_size()
    }
    fn item_label(&self, i: usize) -> u32 {
        self.0.label(i)
    }
    fn load_item(&self, i: usize, flip: bool) -> CliResult<Vec<f32>> {
        self.0.image(i, flip)
    }
}

impl ItemSource for ShardSet {
    fn item_len(&self) -> usize {
        self.dims().iter().product()
    }
    fn item_label(&self, i: usize) -> u32 {
        self.label(i)
    }
    fn load_item(&self, i: usize, _flip: bool) -> CliResult<Vec<f32>> {
        let mut v = vec![0.0; self.item_len()];
        self.read_into(i, &mut v)?;
        Ok(v)
    }
}

impl ItemSource for LatentCache {
    fn item_len(&self) -> usize {
        self.dims.iter().product()
    }
    fn item_label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    fn load_item(&self, i: usize, _flip: bool) -> CliResult<Vec<f32>> {
        let d = self.item_len();
        self.latents
            .get(i * d..(i + 1) * d)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| CliError::new(format!("latent {i} is outside the cache")))
    }
}

/// Number of decoding threads when `--workers` is not given: the machine's parallelism.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One item to load: `(generation, step, slot, index, flip)`.
type Job = (u64, u64, usize, usize, bool);
/// A loaded item: `(generation, step, slot, values)`.
type Done = (u64, u64, usize, CliResult<Vec<f32>>);

struct Pending {
    values: Vec<f32>,
    labels: Vec<u32>,
    left: usize,
    error: Option<(usize, CliError)>,
}

struct Pool {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    generation: Arc<AtomicU64>,
}

/// Loads the batches of a plan (`step → [(index, flip)]`), ahead of time when it has
/// worker threads. Made by [`with_loader`].
#[allow(missing_debug_implementations)]
pub struct Loader<'a> {
    src: &'a dyn ItemSource,
    plan: Box<dyn FnMut(u64) -> Vec<(usize, bool)> + 'a>,
    pool: Option<Pool>,
    ahead: usize,
    end: u64,
    generation: u64,
    next: u64,
    submitted: u64,
    pending: HashMap<u64, Pending>,
}

/// Runs `f` with a [`Loader`] of the batches `plan(step)` of `src` for steps below `end`,
/// decoded by `workers` threads (0: on the calling thread, when asked) `ahead` batches in
/// advance. The threads end when `f` returns.
pub fn with_loader<'a, R>(
    src: &'a dyn ItemSource,
    workers: usize,
    ahead: usize,
    end: u64,
    plan: impl FnMut(u64) -> Vec<(usize, bool)> + 'a,
    f: impl FnOnce(&mut Loader<'a>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let pool = (workers > 0).then(|| {
            let (jobs, job_rx) = channel::<Job>();
            let (done_tx, done) = channel::<Done>();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let generation = Arc::new(AtomicU64::new(0));
            for _ in 0..workers {
                let (job_rx, done_tx, generation) =
                    (job_rx.clone(), done_tx.clone(), generation.clone());
                scope.spawn(move || worker(src, &job_rx, &done_tx, &generation));
            }
            Pool {
                jobs,
                done,
                generation,
            }
        });
        let mut loader = Loader {
            src,
            plan: Box::new(plan),
            pool,
            ahead,
            end,
            generation: 0,
            next: 0,
            submitted: 0,
            pending: HashMap::new(),
        };
        let r = f(&mut loader);
        // Dropping the loader closes the job queue: the workers finish their item and end.
        drop(loader);
        r
    })
}

fn worker(
    src: &dyn ItemSource,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done>,
    generation: &AtomicU64,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((g, step, slot, i, flip)) = job else {
            return;
        };
        if g != generation.load(Ordering::Relaxed) {
            continue; // dropped: the loader moved to another step
        }
        let item = catch_unwind(AssertUnwindSafe(|| src.load_item(i, flip))).unwrap_or_else(|_| {
            Err(CliError::new(format!(
                "the loader thread failed on item {i}"
            )))
        });
        if done.send((g, step, slot, item)).is_err() {
            return;
        }
    }
}

impl Loader<'_> {
    /// The batch of `step`: the items' values concatenated, and their labels.
    pub fn batch(&mut self, step: u64) -> CliResult<(Vec<f32>, Vec<u32>)> {
        let Some(pool) = &self.pool else {
            let items = (self.plan)(step);
            return load_now(self.src, &items);
        };
        if step != self.next {
            // A jump: whatever was loaded ahead belongs to other steps.
            self.generation += 1;
            pool.generation.store(self.generation, Ordering::Relaxed);
            self.pending.clear();
            self.submitted = step;
        }
        self.next = step + 1;
        let last = step
            .saturating_add(1 + self.ahead as u64)
            .min(self.end)
            .max(step + 1);
        while self.submitted < last {
            let s = self.submitted;
            let items = (self.plan)(s);
            let len = self.src.item_len();
            self.pending.insert(
                s,
                Pending {
                    values: vec![0.0; items.len() * len],
                    labels: items.iter().map(|&(i, _)| self.src.item_label(i)).collect(),
                    left: items.len(),
                    error: None,
                },
            );
            for (slot, &(i, flip)) in items.iter().enumerate() {
                pool.jobs
                    .send((self.generation, s, slot, i, flip))
                    .map_err(|_| CliError::new("the loader threads have stopped"))?;
            }
            self.submitted += 1;
        }
        while self.pending.get(&step).is_some_and(|p| p.left > 0) {
            let (g, s, slot, item) = pool
                .done
                .recv()
                .map_err(|_| CliError::new("the loader threads have stopped"))?;
            if g != self.generation {
                continue;
            }
            if let Some(p) = self.pending.get_mut(&s) {
                p.left -= 1;
                let len = self.src.item_len();
                match item {
                    Ok(v) if v.len() == len => {
                        p.values[slot * len..(slot + 1) * len].copy_from_slice(&v)
                    }
                    Ok(v) => {
                        let e = CliError::new(format!(
                            "item of {} values where {len} were expected",
                            v.len()
                        ));
                        keep_first(&mut p.error, slot, e);
                    }
                    Err(e) => keep_first(&mut p.error, slot, e),
                }
            }
        }
        let p = self
            .pending
            .remove(&step)
            .ok_or_else(|| CliError::new(format!("the loader lost the batch of step {step}")))?;
        match p.error {
            Some((_, e)) => Err(e),
            None => Ok((p.values, p.labels)),
        }
    }
}

fn keep_first(slot_err: &mut Option<(usize, CliError)>, slot: usize, e: CliError) {
    if slot_err.as_ref().is_none_or(|(s, _)| slot < *s) {
        *slot_err = Some((slot, e));
    }
}

/// Loads `items` on this thread, in order.
pub fn load_now(src: &dyn ItemSource, items: &[(usize, bool)]) -> CliResult<(Vec<f32>, Vec<u32>)> {
    let len = src.item_len();
    let mut values = Vec::with_capacity(items.len() * len);
    let mut labels = Vec::with_capacity(items.len());
    for &(i, flip) in items {
        let v = src.load_item(i, flip)?;
        if v.len() != len {
            return Err(CliError::new(format!(
                "item {i} has {} values where {len} were expected",
                v.len()
            )));
        }
        values.extend(v);
        labels.push(src.item_label(i));
    }
    Ok((values, labels))
}
