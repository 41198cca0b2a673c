//! Linear weights kept in `[k, n]` order for the products of many rows.
//!
//! A linear layer's weight is stored `[n, k]` (PyTorch's layout) and the product is
//! `x · wᵀ`. `gemm` runs 5–25% faster when the right operand is plain `[k, n]` than when it
//! is the transpose of `[n, k]` (measured on 1044 rows, 2 threads, in one run: 219 against
//! 199 GFLOP/s at `768 × 768`, 216 against 173 at `k = 3072, n = 768`), and copying the
//! weight into that order on every call costs about what the product gains. So the copy is
//! made once a weight is used a second time, and kept while the weight lives: every
//! forward of a frozen encoder, and every step of a sampler, reuses it. A weight a trainer
//! updates after each use is a new value each time, is seen once, and is never copied.
//!
//! Entries are keyed by the weight's storage and hold it weakly, so a weight that is
//! dropped, or updated in place (`Arc::make_mut` moves a value that has weak references
//! into a new allocation), is never matched again: a copy can never be stale. Dead entries
//! are dropped whenever one is added; at most [`MAX_BYTES`] of copies are kept, and a weight
//! that does not fit is used as it is. Without `std` there is no lock, so nothing is kept.

use alloc::sync::{Arc, Weak};

use crate::cpu::pool::Buf;

#[cfg_attr(not(feature = "std"), allow(dead_code))]
/// Most bytes of transposed copies kept at once (1 GiB): the weights of a DiT-DH-XL's
/// encoder do not all fit, a ViT-B's or a DiT-DH-S's do.
pub const MAX_BYTES: usize = 1 << 30;

/// From this many rows a product uses (and makes) the transposed copy. Below it the copy
/// does not pay: a DiT-DH-XL forward at batch 1 (256 rows, 2.7 GB of weights streamed from
/// memory) ran 8% slower with copies than without in three paired runs, although each of
/// its products alone is faster on a copy that stays in cache.
pub const MIN_ROWS: usize = 512;

/// A weight seen before, and its copy once it has one.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[derive(Debug)]
struct Entry {
    weight: Weak<Buf>,
    n: usize,
    k: usize,
    transposed: Option<Arc<Buf>>,
}

#[cfg(feature = "std")]
static KEPT: std::sync::Mutex<alloc::vec::Vec<Entry>> =
    std::sync::Mutex::new(alloc::vec::Vec::new());

/// The weight `w` (`[n, k]`, its first `n·k` values) in `[k, n]` order: the kept copy, or
/// a new one when `w` was seen before (kept when it fits). `None` the first time `w` is
/// seen, and when nothing can be kept (no `std`, or the copies fill [`MAX_BYTES`]): use `w`
/// as it is.
pub fn get(w: &Arc<Buf>, n: usize, k: usize) -> Option<Arc<Buf>> {
    #[cfg(feature = "std")]
    {
        {
            let mut kept = lock();
            match find(&mut kept, w, n, k) {
                Some(Entry {
                    transposed: Some(t),
                    ..
                }) => return Some(t.clone()),
                Some(_) => {}
                None => {
                    kept.retain(|e| e.weight.strong_count() > 0);
                    kept.push(Entry {
                        weight: Arc::downgrade(w),
                        n,
                        k,
                        transposed: None,
                    });
                    return None;
                }
            }
            if used(&kept) + 4 * n * k > MAX_BYTES {
                return None;
            }
        }
        // Made without the lock: the copy runs on the pool, whose waiting thread may run
        // another task that asks for a weight.
        let transposed = Arc::new(Buf::new(transpose(&w.as_slice()[..n * k], n, k)));
        let mut kept = lock();
        match find(&mut kept, w, n, k) {
            Some(Entry {
                transposed: Some(t),
                ..
            }) => Some(t.clone()),
            Some(e) => {
                e.transposed = Some(transposed.clone());
                Some(transposed)
            }
            None => Some(transposed),
        }
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = (w, n, k);
        None
    }
}

#[cfg(feature = "std")]
fn lock() -> std::sync::MutexGuard<'static, alloc::vec::Vec<Entry>> {
    // A panic while the lock was held leaves a list of plain entries: still valid.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live entry of `w` as `[n, k]`, if any. A live weak key cannot share its address with
/// another weight: the weak reference keeps the allocation from being reused.
#[cfg(feature = "std")]
fn find<'a>(kept: &'a mut [Entry], w: &Arc<Buf>, n: usize, k: usize) -> Option<&'a mut Entry> {
    kept.iter_mut().find(|e| {
        e.weight.as_ptr() == Arc::as_ptr(w) && e.weight.strong_count() > 0 && (e.n, e.k) == (n, k)
    })
}

/// Bytes held by the kept copies.
#[cfg(feature = "std")]
fn used(kept: &[Entry]) -> usize {
    kept.iter()
        .filter(|e| e.transposed.is_some())
        .map(|e| 4 * e.n * e.k)
        .sum()
}

/// `w` `[n, k]` copied into `[k, n]` order, in square tiles so both sides are read and
/// written a cache line at a time.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
fn transpose(w: &[f32], n: usize, k: usize) -> alloc::vec::Vec<f32> {
    const TILE: usize = 32;
    let mut out = crate::cpu::pool::scratch(k * n);
    crate::cpu::par::for_rows(&mut out, n, 1, |first, part| {
        let rows = part.len() / n;
        for i0 in (0..rows).step_by(TILE) {
            for j0 in (0..n).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    let src = &w[first + i..];
                    let dst = &mut part[i * n..(i + 1) * n];
                    for j in j0..(j0 + TILE).min(n) {
                        dst[j] = src[j * k];
                    }
                }
            }
        }
    });
    out
}

#[cfg(all(test, feature = "std"))]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn copies_are_transposed_kept_and_never_stale() {
        let (n, k) = (37, 21);
        let v: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let w = Arc::new(Buf::new(v.clone()));
        // The first use only notes the weight.
        assert!(get(&w, n, k).is_none());
        let t = get(&w, n, k).expect("kept");
        for i in 0..k {
            for j in 0..n {
                assert_eq!(t.as_slice()[i * n + j], v[j * k + i]);
            }
        }
        // Asked again: the same copy.
        let again = get(&w, n, k).expect("kept");
        assert!(Arc::ptr_eq(&t, &again));
        // Updated in place: make_mut moves the value away from the weak key, so the next
        // product makes a fresh copy of the new values.
        let mut w = w;
        Arc::make_mut(&mut w).as_mut_slice()[0] = -1.0;
        assert!(get(&w, n, k).is_none());
        let fresh = get(&w, n, k).expect("kept");
        assert!(!Arc::ptr_eq(&t, &fresh));
        assert_eq!(fresh.as_slice()[0], -1.0);
        // Another shape of the same storage is another copy.
        assert!(get(&w, k, n).is_none());
        let other = get(&w, k, n).expect("kept");
        assert_eq!(other.as_slice()[1], w.as_slice()[n]);
    }
}
