//! Matrix product without the `gemm` crate, in the GotoBLAS / BLIS layout.
//!
//! `op(a)` is packed once into `MR`-row panels and `op(b)` into `NR`-column panels, each
//! running over all of `K` (packing absorbs the transposes and strides and zero-pads the
//! ragged edges). The output is then cut into blocks of about `MC` rows × `NC` columns that
//! the threads take one at a time; inside a block, for every `KC`-deep slice of `K`, a
//! micro-kernel sweeps the `A` panels against each `B` panel while it keeps an `MR × NR`
//! tile of the output in vector registers: the `B` panel slice stays in L1, the block's
//! `A` slice and output in L2.
//!
//! The micro-kernel is one generic function over a small vector abstraction ([`Simd`]).
//! On x86_64 it is compiled three times — AVX-512, AVX2 + FMA and the SSE2 baseline — and
//! the widest level the CPU and OS support is chosen once at run time (`cpuid` + `xgetbv`
//! when there is no `std`). Elsewhere the portable baseline is used; its fixed-size arrays
//! autovectorise (NEON is part of the aarch64 baseline).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use core::{ptr, slice};

use self::kernel::{pack, tile_any, Portable, Simd};
use super::Operand;
use crate::cpu::par;

/// Instruction-set level of the micro-kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Portable arrays (SSE2 on x86_64, NEON on aarch64), separate multiply and add.
    Baseline,
    /// 256-bit vectors with fused multiply-add.
    Avx2,
    /// 512-bit vectors with fused multiply-add.
    Avx512,
}

impl Level {
    /// Every level, widest first.
    pub(crate) const ALL: [Level; 3] = [Level::Avx512, Level::Avx2, Level::Baseline];

    /// Whether this CPU (and its OS) can run the level.
    pub(crate) fn supported(self) -> bool {
        match self {
            Level::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::has_avx2_fma(),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest supported level, detected once.
    pub(crate) fn detect() -> Level {
        static CACHED: AtomicUsize = AtomicUsize::new(usize::MAX);
        if let Some(&level) = Level::ALL.get(CACHED.load(Ordering::Relaxed)) {
            return level;
        }
        let i = Level::ALL
            .iter()
            .position(|l| l.supported())
            .unwrap_or(Level::ALL.len() - 1);
        CACHED.store(i, Ordering::Relaxed);
        Level::ALL[i]
    }

    /// `(MR, NR)`: the register tile of the level's micro-kernel.
    fn tile(self) -> (usize, usize) {
        match self {
            Level::Baseline => (BASE_MR, BASE_NV * BASE_LANES),
            Level::Avx2 => (AVX2_MR, AVX2_NV * 8),
            Level::Avx512 => (AVX512_MR, AVX512_NV * 16),
        }
    }
}

/// Depth of one `K` slice: a `KC × NR` slice of a `B` panel stays in L1.
const KC: usize = 256;
/// Rows of an output block (rounded to whole panels): its `MC × KC` slice of `A` and its
/// `MC × NC` output stay in L2.
const MC: usize = 168;
/// Columns of an output block.
const NC: usize = 1024;
/// Below this many multiply-adds a product stays on one thread.
const PAR_WORK: usize = 1 << 21;

/// Baseline micro-kernel: `BASE_MR × (BASE_NV · BASE_LANES)`.
const BASE_MR: usize = 6;
const BASE_NV: usize = 1;
const BASE_LANES: usize = 8;
/// AVX-512: 14 rows × 2 vectors of 16 = 28 accumulators of the 32 registers.
const AVX512_MR: usize = 14;
const AVX512_NV: usize = 2;
/// AVX2: 6 rows × 2 vectors of 8 = 12 accumulators of the 16 registers.
const AVX2_MR: usize = 6;
const AVX2_NV: usize = 2;

/// `out[m, n] = op(a)[m, k] · op(b)[k, n]`, added to what `out` holds when `acc`, at the
/// widest level this CPU supports.
pub(super) fn blocked(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    oa: Operand,
    ob: Operand,
    threaded: bool,
    acc: bool,
) {
    blocked_at(Level::detect(), a, b, out, m, n, k, oa, ob, threaded, acc);
}

/// [`blocked`] with the micro-kernel of `level`; an unsupported level falls back to the
/// baseline. Tests use it to check every level the CPU has.
#[allow(clippy::too_many_arguments)]
pub(crate) fn blocked_at(
    level: Level,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    oa: Operand,
    ob: Operand,
    threaded: bool,
    acc: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            out[..m * n].fill(0.0);
        }
        return;
    }
    assert!(out.len() >= m * n, "matmul output too short");
    assert!(
        a.len() > (m - 1) * oa.rs + (k - 1) * oa.cs,
        "matmul left operand too short"
    );
    assert!(
        b.len() > (k - 1) * ob.rs + (n - 1) * ob.cs,
        "matmul right operand too short"
    );
    let level = if level.supported() {
        level
    } else {
        Level::Baseline
    };
    let workers = if threaded && m.saturating_mul(n).saturating_mul(k) >= PAR_WORK {
        par::threads()
    } else {
        1
    };
    let (mr, nr) = level.tile();
    let (m_panels, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    // Both packed operands live in one scratch buffer: op(a) first, then op(b).
    let a_len = m_panels * k * mr;
    let mut buf = scratch(a_len + n_panels * k * nr);
    let grid = Grid::new(
        m_panels,
        n_panels,
        MC.div_ceil(mr),
        (NC / nr).max(1),
        workers,
    );
    let packed = buf.as_mut_ptr();
    let job = Job {
        a: (a, oa),
        b: (b, ob),
        ap: Shared(packed),
        bp: Shared(packed.wrapping_add(a_len)),
        out: Shared(out.as_mut_ptr()),
        m,
        n,
        k,
        acc,
        grid,
        next_panel: AtomicUsize::new(0),
        packed: AtomicUsize::new(0),
        next_block: AtomicUsize::new(0),
    };
    let work = || run(level, &job);
    // Helpers are tasks on rayon's pool (already running, and the pool every other op of
    // the backend uses), not threads started for each product. A helper that starts late
    // finds nothing left and returns; the caller never waits for one to start.
    #[cfg(feature = "std")]
    if workers > 1 {
        rayon::scope(|s| {
            for _ in 1..workers.min(grid.blocks()) {
                s.spawn(|_| work());
            }
            work();
        });
    } else {
        work();
    }
    #[cfg(not(feature = "std"))]
    work();
    recycle(buf);
}

/// The packing buffer kept from the last product, so that a run of similar products does
/// not map, zero and fault in fresh pages every time.
static SPARE: AtomicPtr<Vec<f32>> = AtomicPtr::new(ptr::null_mut());
/// Largest buffer kept (floats): 16 MiB.
const SPARE_MAX: usize = 1 << 22;

/// A buffer of `len` floats with unspecified contents: the spare one when there is one.
fn scratch(len: usize) -> Vec<f32> {
    let p = SPARE.swap(ptr::null_mut(), Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: non-null pointers in SPARE come from `Box::into_raw` in `recycle`, and the
        // swap took this one out, so this thread owns it alone.
        let mut v = *unsafe { Box::from_raw(p) };
        if v.capacity() >= len {
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0f32; len]
}

/// Offers `v` as the spare buffer; drops it when it is too big or there is one already.
fn recycle(v: Vec<f32>) {
    if v.capacity() > SPARE_MAX {
        return;
    }
    let b = Box::into_raw(Box::new(v));
    if SPARE
        .compare_exchange(ptr::null_mut(), b, Ordering::Release, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: `b` came from `Box::into_raw` above and was never published.
        drop(unsafe { Box::from_raw(b) });
    }
}

/// The output cut into blocks of `mp` row panels × `np` column panels.
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// Row panels of the product and per block.
    m_panels: usize,
    mp: usize,
    /// Column panels of the product and per block.
    n_panels: usize,
    np: usize,
}

impl Grid {
    /// Blocks of at most `mp_max × np_max` panels of equal size, cut finer (down to 4
    /// column panels) until there are a few blocks per worker to balance the load.
    fn new(m_panels: usize, n_panels: usize, mp_max: usize, np_max: usize, workers: usize) -> Grid {
        let rows = m_panels.div_ceil(mp_max.max(1));
        let mut cols = n_panels.div_ceil(np_max.max(1));
        while workers > 1 && rows * cols < 4 * workers && n_panels / (cols + 1) >= 4 {
            cols += 1;
        }
        Grid {
            m_panels,
            mp: m_panels.div_ceil(rows),
            n_panels,
            np: n_panels.div_ceil(cols),
        }
    }

    fn blocks(&self) -> usize {
        self.m_panels.div_ceil(self.mp) * self.n_panels.div_ceil(self.np)
    }
}

/// A buffer that several workers write in disjoint parts.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: workers write disjoint panels and blocks (each index is handed out once by an
// atomic counter), read packed panels only after all are written (the `packed` count,
// release / acquire), and the buffers outlive the scoped threads.
unsafe impl Sync for Shared {}

/// What every worker of one product shares.
struct Job<'a> {
    a: (&'a [f32], Operand),
    b: (&'a [f32], Operand),
    /// `op(a)` packed into `m_panels` row panels of `[k, MR]`.
    ap: Shared,
    /// `op(b)` packed into `n_panels` column panels of `[k, NR]`.
    bp: Shared,
    /// `[m, n]`, row-major.
    out: Shared,
    m: usize,
    n: usize,
    k: usize,
    /// Add to what `out` holds (else the first `K` slice overwrites it).
    acc: bool,
    grid: Grid,
    /// Next panel to pack: `op(a)`'s first, then `op(b)`'s.
    next_panel: AtomicUsize,
    /// Panels packed so far.
    packed: AtomicUsize,
    /// Next output block to compute.
    next_block: AtomicUsize,
}

/// Adds one to the counter when dropped (release).
struct Count<'a>(&'a AtomicUsize);

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// One worker of `job` with `level`'s kernel.
fn run(level: Level, job: &Job<'_>) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `blocked_at` only passes a level that `Level::supported` confirmed, and
        // sized the job for this level's tile.
        Level::Avx512 => unsafe { x86::work_avx512(job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::work_avx2(job) },
        // SAFETY: the portable vectors need no target feature; the job is sized for
        // `Level::Baseline` (the only level left here).
        _ => unsafe { work::<Portable, BASE_MR, BASE_NV>(job) },
    }
}

/// One worker of `job`: packs panels until none are left, waits until all are packed, then
/// computes output blocks until none are left.
///
/// # Safety
/// Must be inlined into code compiled with `V`'s target features (see [`Simd`]); `job` is
/// sized for `MR × NV · V::LANES` tiles, its `ap` and `bp` point to that many packed floats
/// and `out` to `m × n`, and nothing but the workers of this job touches them meanwhile.
#[inline(always)]
unsafe fn work<V: Simd, const MR: usize, const NV: usize>(job: &Job<'_>) {
    let (m, n, k, g) = (job.m, job.n, job.k, job.grid);
    let nr = NV * V::LANES;
    let panels = g.m_panels + g.n_panels;
    loop {
        let i = job.next_panel.fetch_add(1, Ordering::Relaxed);
        if i >= panels {
            break;
        }
        // Counted as packed even if packing panics, so no worker waits forever.
        let _done = Count(&job.packed);
        // op(a) row panels run along its rows (stride rs) and down K (stride cs); op(b)
        // column panels along its columns (cs) and down K (rs). Two calls, so that each
        // inlined copy knows its panel width.
        if i < g.m_panels {
            let ((a, oa), t0) = (job.a, i * MR);
            // SAFETY: panel `i` lies inside the packed buffer and is handed out only once.
            let dst = unsafe { slice::from_raw_parts_mut(job.ap.0.add(i * k * MR), k * MR) };
            pack::<V>(dst, MR, a, t0 * oa.rs, oa.rs, oa.cs, MR.min(m - t0), k);
        } else {
            let ((b, ob), t0) = (job.b, (i - g.m_panels) * nr);
            // SAFETY: as above.
            let dst = unsafe { slice::from_raw_parts_mut(job.bp.0.add(t0 * k), k * nr) };
            pack::<V>(dst, nr, b, t0 * ob.cs, ob.cs, ob.rs, nr.min(n - t0), k);
        }
    }
    while job.packed.load(Ordering::Acquire) < panels {
        // Another worker is finishing its last panel.
        #[cfg(feature = "std")]
        std::thread::yield_now();
        #[cfg(not(feature = "std"))]
        core::hint::spin_loop();
    }
    // SAFETY: every panel is written (acquired above) and nobody writes them any more.
    let (ap, bp) = unsafe {
        (
            slice::from_raw_parts(job.ap.0, g.m_panels * k * MR),
            slice::from_raw_parts(job.bp.0, g.n_panels * k * nr),
        )
    };
    let col_blocks = g.n_panels.div_ceil(g.np);
    loop {
        let block = job.next_block.fetch_add(1, Ordering::Relaxed);
        if block >= g.blocks() {
            return;
        }
        let ip0 = block / col_blocks * g.mp;
        let jp0 = block % col_blocks * g.np;
        let (ip1, jp1) = ((ip0 + g.mp).min(g.m_panels), (jp0 + g.np).min(g.n_panels));
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let add = job.acc || pc > 0;
            for jp in jp0..jp1 {
                let b = bp[jp * k * nr + pc * nr..].as_ptr();
                let cols = nr.min(n - jp * nr);
                for ip in ip0..ip1 {
                    let a = ap[ip * k * MR + pc * MR..].as_ptr();
                    let r = MR.min(m - ip * MR);
                    // SAFETY: `a` holds kc·MR packed floats, `b` kc·nr; the tile at row
                    // ip·MR, column jp·nr covers r ≤ MR rows and cols ≤ nr columns inside
                    // the m × n output, in this worker's block.
                    unsafe {
                        let c = job.out.0.add(ip * MR * n + jp * nr);
                        tile_any::<V, MR, NV>(kc, a, b, c, n, r, cols, add);
                    }
                }
            }
        }
    }
}

mod kernel;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    /// Deterministic values in `[-1, 1)`.
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `op(a) · op(b)` accumulated in f64.
    fn reference(
        a: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
    ) -> Vec<f64> {
        let (oa, ob) = (Operand::new(m, k, ta), Operand::new(k, n, tb));
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * oa.rs + p * oa.cs] as f64 * b[p * ob.rs + j * ob.cs] as f64)
                    .sum();
            }
        }
        c
    }

    /// Checks one product at `level` against the f64 reference: the largest error over the
    /// largest reference magnitude stays within 1e-5 · √K.
    fn check(level: Level, m: usize, n: usize, k: usize, ta: bool, tb: bool, threaded: bool) {
        let a = data(m * k, (m * 31 + k) as u64);
        let b = data(k * n, (n * 17 + k) as u64 + 7);
        let want = reference(&a, &b, m, n, k, ta, tb);
        let mut got = vec![f32::NAN; m * n];
        let (oa, ob) = (Operand::new(m, k, ta), Operand::new(k, n, tb));
        blocked_at(level, &a, &b, &mut got, m, n, k, oa, ob, threaded, false);
        let scale = want.iter().fold(1e-30f64, |s, w| s.max(w.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |e, (&g, &w)| e.max((g as f64 - w).abs()));
        let tol = 1e-5 * (k as f64).sqrt();
        assert!(
            err / scale <= tol,
            "{level:?} m={m} n={n} k={k} ta={ta} tb={tb} threaded={threaded}: \
             relative error {} > {tol}",
            err / scale
        );
    }

    fn levels() -> Vec<Level> {
        Level::ALL.into_iter().filter(|l| l.supported()).collect()
    }

    #[test]
    fn every_level_matches_reference_on_odd_sizes() {
        const SIZES: [usize; 8] = [1, 2, 7, 17, 33, 65, 130, 200];
        for level in levels() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for &m in &SIZES {
                    for &n in &[1, 15, 33, 130] {
                        for &k in &[1, 7, 65] {
                            check(level, m, n, k, ta, tb, false);
                        }
                    }
                }
                for &(m, n, k) in &[(1, 1, 600), (17, 33, 257), (33, 17, 300), (130, 65, 513)] {
                    check(level, m, n, k, ta, tb, false);
                }
            }
        }
    }

    #[test]
    fn every_level_threaded_and_blocked_over_mc_nc() {
        // More rows than MC, more columns than NC, K over two KC slices: every loop of the
        // macro-kernel runs more than once, on both threads.
        for level in levels() {
            for (ta, tb) in [(false, false), (true, true), (false, true)] {
                check(level, 2 * MC + 9, 65, 2 * KC + 3, ta, tb, true);
                check(level, 23, NC + 40, 140, ta, tb, true);
            }
            check(level, 300, 257, 300, true, false, true);
        }
    }

    #[test]
    fn accumulates_into_output() {
        for level in levels() {
            let (m, n, k) = (19, 37, 41);
            let (a, b) = (data(m * k, 3), data(k * n, 4));
            let (oa, ob) = (Operand::new(m, k, false), Operand::new(k, n, false));
            // Overwritten without `acc`: what the buffer held does not count.
            let mut once = vec![f32::NAN; m * n];
            blocked_at(level, &a, &b, &mut once, m, n, k, oa, ob, false, false);
            let mut twice = once.clone();
            blocked_at(level, &a, &b, &mut twice, m, n, k, oa, ob, false, true);
            for (t, o) in twice.iter().zip(&once) {
                assert!((t - 2.0 * o).abs() <= 1e-5 * o.abs().max(1.0));
            }
        }
    }

    #[test]
    fn detection_picks_widest_supported_level() {
        let widest = levels()[0];
        assert_eq!(Level::detect(), widest);
        assert_eq!(Level::detect(), widest);
        assert!(Level::Baseline.supported());
    }

    /// The `cpuid` / `xgetbv` detection used without `std` agrees with std's.
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    #[test]
    fn cpuid_detection_matches_std() {
        let (avx2, avx512) = x86::cpuid_levels();
        assert_eq!(
            avx2,
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        assert_eq!(
            avx512,
            avx2 && std::arch::is_x86_feature_detected!("avx512f")
        );
    }
}
