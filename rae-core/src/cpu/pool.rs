//! Reuse of the CPU backend's large buffers. Every op writes a fresh output; a fresh
//! allocation of a few MiB comes from the kernel zeroed page by page, and the page faults
//! cost more than some ops themselves (a softmax or a GELU over an activation). A tensor's
//! storage is a [`Buf`], whose drop hands its vector back here, and the next output of a
//! similar size takes it: its pages are already mapped.
//!
//! Only buffers of at least [`MIN_FLOATS`] are kept, at most [`MAX_KEPT`] of them and
//! [`MAX_BYTES`] in all; a buffer is reused for a request of between half and all of its
//! capacity. Without `std` there is no lock to guard the pool, so nothing is kept.

use alloc::vec;
use alloc::vec::Vec;

/// Smallest buffer worth keeping (256 KiB): smaller ones the allocator serves well.
pub const MIN_FLOATS: usize = 1 << 16;
/// Most buffers kept at once.
pub const MAX_KEPT: usize = 64;
/// Most bytes kept at once (2 GiB).
pub const MAX_BYTES: usize = 2 << 30;

/// The storage of a CPU tensor: a vector that goes back to the pool when dropped.
#[derive(Debug, Default)]
pub struct Buf(Vec<f32>);

impl Buf {
    /// Wraps `v`.
    pub fn new(v: Vec<f32>) -> Self {
        Buf(v)
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// The values, writable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Clone for Buf {
    fn clone(&self) -> Self {
        let mut v = scratch(self.0.len());
        v.copy_from_slice(&self.0);
        Buf(v)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        give(core::mem::take(&mut self.0));
    }
}

/// `n` zeros: a kept buffer of capacity `n..=2n` when there is one, else a new vector.
pub fn zeroed(n: usize) -> Vec<f32> {
    let (mut v, kept) = reuse(n);
    if kept {
        v.fill(0.0);
    }
    v
}

/// `n` values that the caller overwrites entirely: a kept buffer with whatever it held
/// (no zeroing pass), else a new vector of zeros.
pub fn scratch(n: usize) -> Vec<f32> {
    reuse(n).0
}

/// A vector of length `n` and whether it is a kept one (stale values) or a new one (zeros).
fn reuse(n: usize) -> (Vec<f32>, bool) {
    #[cfg(feature = "std")]
    if n >= MIN_FLOATS {
        if let Some(mut v) = take(n) {
            v.resize(n, 0.0);
            return (v, true);
        }
    }
    (vec![0.0f32; n], false)
}

/// The kept buffers, and the rules for taking and keeping one (used only under `std`).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[derive(Debug, Default)]
struct Kept(Vec<Vec<f32>>);

#[cfg_attr(not(feature = "std"), allow(dead_code))]
impl Kept {
    /// The kept buffer of the smallest capacity in `n..=2n`, taken out.
    fn take(&mut self, n: usize) -> Option<Vec<f32>> {
        let upper = n.saturating_mul(2);
        let best = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, v)| (n..=upper).contains(&v.capacity()))
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(self.0.swap_remove(best))
    }

    /// Keeps `v` when it is large enough and there is room; drops it otherwise.
    fn give(&mut self, v: Vec<f32>) {
        if v.capacity() >= MIN_FLOATS
            && self.0.len() < MAX_KEPT
            && self.bytes() + 4 * v.capacity() <= MAX_BYTES
        {
            self.0.push(v);
        }
    }

    fn bytes(&self) -> usize {
        self.0.iter().map(|k| 4 * k.capacity()).sum()
    }
}

#[cfg(feature = "std")]
static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Kept(Vec::new()));

#[cfg(feature = "std")]
fn lock() -> std::sync::MutexGuard<'static, Kept> {
    // A panic while the lock was held leaves a list of plain vectors: still valid.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "std")]
fn take(n: usize) -> Option<Vec<f32>> {
    lock().take(n)
}

fn give(v: Vec<f32>) {
    #[cfg(feature = "std")]
    if v.capacity() >= MIN_FLOATS {
        lock().give(v);
        return;
    }
    drop(v);
}

/// Empties the pool (its memory goes back to the allocator).
pub fn clear() {
    #[cfg(feature = "std")]
    lock().0.clear();
}

/// Buffers and bytes kept now.
pub fn kept() -> (usize, usize) {
    #[cfg(feature = "std")]
    {
        let kept = lock();
        (kept.0.len(), kept.bytes())
    }
    #[cfg(not(feature = "std"))]
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_fitting_buffer_is_reused_and_small_or_excess_ones_are_dropped() {
        let mut k = Kept::default();
        let n = MIN_FLOATS + 100;
        let (a, b) = (vec![1.0f32; 3 * n], vec![2.0f32; n + 7]);
        let b_ptr = b.as_ptr();
        k.give(a);
        k.give(b);
        k.give(vec![0.0; 16]);
        assert_eq!(k.0.len(), 2, "a small buffer was kept");
        // 3n is more than twice n: only the (n + 7) buffer fits.
        let got = k.take(n).map(|v| v.as_ptr());
        assert_eq!(got, Some(b_ptr));
        assert!(
            k.take(n).is_none(),
            "a buffer over twice the request was handed out"
        );
        for i in 0..MAX_KEPT + 8 {
            k.give(vec![0.0; MIN_FLOATS + i]);
        }
        assert!(k.0.len() <= MAX_KEPT && k.bytes() <= MAX_BYTES);
    }

    #[test]
    fn zeroed_and_cloned_buffers_hold_what_they_should() {
        let n = MIN_FLOATS + 12_345;
        let mut first = zeroed(n);
        first.iter_mut().for_each(|x| *x = 7.0);
        drop(Buf::new(first));
        let again = zeroed(n);
        assert_eq!(again.len(), n);
        assert!(
            again.iter().all(|&x| x == 0.0),
            "a reused buffer must come back zeroed"
        );
        let c = Buf::new(vec![2.0; MIN_FLOATS]).clone();
        assert_eq!(c.as_slice(), &vec![2.0; MIN_FLOATS][..]);
    }
}
