//! A minimal parallel-for over disjoint output chunks: tasks on rayon's global pool under
//! `std` (the pool `gemm`'s products run on, so element-wise work never competes with its
//! workers for the cores, and no thread is started per op), a plain loop otherwise or when
//! the work is too small to pay for a task.

/// Below this many output elements (times the per-element cost hint) work stays on one
/// thread: spawning costs tens of microseconds.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// Number of worker threads the CPU backend uses.
pub fn threads() -> usize {
    #[cfg(feature = "std")]
    {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static CACHED: AtomicUsize = AtomicUsize::new(0);
        let c = CACHED.load(Ordering::Relaxed);
        if c != 0 {
            return c;
        }
        let n = rayon::current_num_threads().max(1);
        CACHED.store(n, Ordering::Relaxed);
        n
    }
    #[cfg(not(feature = "std"))]
    {
        1
    }
}

/// Calls `f(first_row, rows)` on disjoint groups of `row_len`-sized rows of `out`, in
/// parallel when `out.len() · cost` is large. `f` gets the index of its first row and the
/// mutable slice of its rows.
pub fn for_rows<F>(out: &mut [f32], row_len: usize, cost: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / row_len;
    let t = threads();
    if t <= 1 || rows < 2 || out.len().saturating_mul(cost.max(1)) < MIN_PARALLEL_WORK {
        f(0, out);
        return;
    }
    #[cfg(feature = "std")]
    {
        let per = rows.div_ceil(t);
        rayon::scope(|s| {
            for (i, chunk) in out.chunks_mut(per * row_len).enumerate() {
                let f = &f;
                s.spawn(move |_| f(i * per, chunk));
            }
        });
    }
    #[cfg(not(feature = "std"))]
    f(0, out);
}

/// The length of the parts an element-wise pass over `n` values is split into: `n` (one part)
/// when the work is small or there is one thread, else one part per thread. Split every
/// slice of the pass with `chunks(part_len(n))`, zip them, and hand the parts to
/// [`for_each_part`].
pub fn part_len(n: usize) -> usize {
    let t = threads();
    if t <= 1 || n < MIN_PARALLEL_WORK {
        n.max(1)
    } else {
        n.div_ceil(t)
    }
}

/// Runs `f` on every part, one pool task per part when there are several (under `std`),
/// in order on this thread otherwise.
pub fn for_each_part<W, F>(parts: impl Iterator<Item = W>, f: F)
where
    W: Send,
    F: Fn(W) + Sync,
{
    #[cfg(feature = "std")]
    {
        let mut parts: alloc::vec::Vec<W> = parts.collect();
        if parts.len() <= 1 {
            parts.into_iter().for_each(f);
            return;
        }
        rayon::scope(|s| {
            let f = &f;
            for w in parts.drain(..) {
                s.spawn(move |_| f(w));
            }
        });
    }
    #[cfg(not(feature = "std"))]
    parts.for_each(f);
}
