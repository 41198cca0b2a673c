//! The inner pieces of the blocked product: packing an operand strip into a panel, and the
//! micro-kernel that accumulates an `R × NR` tile of the output in registers, generic over
//! the vector type ([`Simd`]) so that each instruction-set level compiles its own copy.

use super::BASE_LANES;

/// Copies a `kc`-deep strip of `w` lanes into `dst` as `dst[p·w + t] =
/// src[base + t·s_w + p·s_k]` for `t < valid`, zero for `valid ≤ t < w`.
#[inline(always)]
pub(super) fn pack<V: Simd>(
    dst: &mut [f32],
    w: usize,
    src: &[f32],
    base: usize,
    s_w: usize,
    s_k: usize,
    valid: usize,
    kc: usize,
) {
    let dst = &mut dst[..kc * w];
    if valid < w {
        dst.fill(0.0);
    }
    if s_w == 1 {
        // Each step of K is a contiguous run of `valid` lanes.
        for (p, d) in dst.chunks_exact_mut(w).enumerate() {
            let s = base + p * s_k;
            if valid == w {
                d.copy_from_slice(&src[s..s + w]);
            } else {
                d[..valid].copy_from_slice(&src[s..s + valid]);
            }
        }
    } else if s_k == 1 {
        // Each lane is a contiguous run along K: transpose 8 × 8 blocks, so reads and
        // writes both stay within a few cache lines.
        assert!(valid >= 1 && kc >= 1 && base + (valid - 1) * s_w + kc <= src.len());
        let mut p0 = 0;
        while p0 + 8 <= kc {
            let mut t0 = 0;
            while t0 + 8 <= valid {
                // SAFETY: rows t0..t0 + 8 < valid of the source, columns p0..p0 + 8 ≤ kc,
                // lie inside `src` (asserted above); the destination block, rows
                // p0..p0 + 8 ≤ kc and columns t0..t0 + 8 ≤ w, inside `dst`.
                unsafe {
                    let s = src.as_ptr().add(base + t0 * s_w + p0);
                    V::transpose8(s, s_w, dst.as_mut_ptr().add(p0 * w + t0), w);
                }
                t0 += 8;
            }
            for t in t0..valid {
                let s = base + t * s_w + p0;
                for (q, &x) in src[s..s + 8].iter().enumerate() {
                    dst[(p0 + q) * w + t] = x;
                }
            }
            p0 += 8;
        }
        for p in p0..kc {
            for t in 0..valid {
                dst[p * w + t] = src[base + t * s_w + p];
            }
        }
    } else {
        for (p, d) in dst.chunks_exact_mut(w).enumerate() {
            for (t, x) in d[..valid].iter_mut().enumerate() {
                *x = src[base + t * s_w + p * s_k];
            }
        }
    }
}

/// A vector of `LANES` f32 and the operations the micro-kernel needs.
///
/// # Safety (for every method)
/// The caller runs in code compiled with the target features of the implementation, and
/// pointers are valid for `LANES` floats (8 rows of 8 for `transpose8`).
pub(super) trait Simd {
    type R: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::R;
    unsafe fn splat(x: f32) -> Self::R;
    unsafe fn load(p: *const f32) -> Self::R;
    unsafe fn store(p: *mut f32, v: Self::R);
    /// `a · b + c`, fused where the level has FMA.
    unsafe fn madd(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    unsafe fn add(a: Self::R, b: Self::R) -> Self::R;
    /// Writes the transpose of the 8 × 8 block at `src` (rows `ls` apart) to `dst` (rows
    /// `ld` apart).
    #[inline(always)]
    unsafe fn transpose8(src: *const f32, ls: usize, dst: *mut f32, ld: usize) {
        for q in 0..8 {
            for r in 0..8 {
                // SAFETY: both blocks are valid (trait contract).
                unsafe { *dst.add(q * ld + r) = *src.add(r * ls + q) };
            }
        }
    }
    /// Hints that the cache line at `p` (any address) will be used soon; no-op by default.
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p;
    }
}

/// Portable vector: a fixed-size array that LLVM turns into the target's baseline SIMD.
pub(super) struct Portable;

#[derive(Clone, Copy)]
pub(super) struct Lanes([f32; BASE_LANES]);

impl Simd for Portable {
    type R = Lanes;
    const LANES: usize = BASE_LANES;
    #[inline(always)]
    unsafe fn zero() -> Lanes {
        Lanes([0.0; BASE_LANES])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Lanes {
        Lanes([x; BASE_LANES])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Lanes {
        // SAFETY: the caller guarantees `p` is valid for `LANES` reads.
        Lanes(unsafe { p.cast::<[f32; BASE_LANES]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Lanes) {
        // SAFETY: the caller guarantees `p` is valid for `LANES` writes.
        unsafe { p.cast::<[f32; BASE_LANES]>().write_unaligned(v.0) }
    }
    #[inline(always)]
    unsafe fn madd(a: Lanes, b: Lanes, c: Lanes) -> Lanes {
        // `mul_add` lowers to an instruction only where FMA is part of the compile-time
        // target (and exists only with std); elsewhere it would be a slow libm call.
        #[cfg(all(feature = "std", any(target_arch = "aarch64", target_feature = "fma")))]
        return Lanes(core::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])));
        #[cfg(not(all(feature = "std", any(target_arch = "aarch64", target_feature = "fma"))))]
        Lanes(core::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn add(a: Lanes, b: Lanes) -> Lanes {
        Lanes(core::array::from_fn(|i| a.0[i] + b.0[i]))
    }
}

/// One tile of `r ≤ MR` rows: a kernel with the fewest rows ≥ `r` among 1, 2, 4, 8, MR,
/// so a thin product does not pay for MR rows.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
pub(super) unsafe fn tile_any<V: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    r: usize,
    cols: usize,
    add: bool,
) {
    // SAFETY: each arm reads at most `MR` rows of the panel and writes `r` rows.
    unsafe {
        if r == MR {
            tile::<V, MR, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        } else if r == 1 && MR > 1 {
            tile::<V, 1, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        } else if r <= 2 && MR > 2 {
            tile::<V, 2, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        } else if r <= 4 && MR > 4 {
            tile::<V, 4, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        } else if r <= 8 && MR > 8 {
            tile::<V, 8, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        } else {
            tile::<V, MR, NV>(kc, a, MR, b, c, ldc, r, cols, add)
        }
    }
}

/// The micro-kernel: `c[i, j] += Σ_p a[p·astep + i] · b[p·NR + j]` for `i < r ≤ R`,
/// `j < cols ≤ NR` (`=` instead of `+=` unless `add`), with the `R × NR` sums held in
/// registers.
///
/// # Safety
/// `a` is valid for `kc · astep` reads (`astep ≥ R`), `b` for `kc · NR`, `c` for rows
/// `i < r` of `cols` floats `ldc` apart; `V`'s target features are enabled.
#[inline(always)]
unsafe fn tile<V: Simd, const R: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    astep: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    r: usize,
    cols: usize,
    add: bool,
) {
    let nr = NV * V::LANES;
    // SAFETY: every pointer offset stays inside the ranges the caller vouches for.
    unsafe {
        // The output tile is read only after the loop: start fetching it now.
        for i in (0..r).filter(|_| add) {
            V::prefetch(c.wrapping_add(i * ldc));
            V::prefetch(c.wrapping_add(i * ldc + cols - 1));
        }
        let mut acc = [[V::zero(); NV]; R];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let bv: [V::R; NV] = core::array::from_fn(|v| V::load(bp.add(v * V::LANES)));
            for row in acc.iter_mut() {
                let av = V::splat(*ap);
                ap = ap.add(1);
                for (x, &bj) in row.iter_mut().zip(&bv) {
                    *x = V::madd(av, bj, *x);
                }
            }
            ap = ap.add(astep - R);
            bp = bp.add(nr);
        }
        if r == R && cols == nr {
            for (i, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    let p = c.add(i * ldc + v * V::LANES);
                    V::store(p, if add { V::add(V::load(p), x) } else { x });
                }
            }
        } else {
            // Ragged edge: spill the block and add the valid part element by element.
            let mut buf = [[[0.0f32; 16]; NV]; R];
            for (brow, row) in buf.iter_mut().zip(&acc) {
                for (bv, &x) in brow.iter_mut().zip(row) {
                    V::store(bv.as_mut_ptr(), x);
                }
            }
            for (i, brow) in buf.iter().enumerate().take(r) {
                for j in 0..cols {
                    let x = brow[j / V::LANES][j % V::LANES];
                    let p = c.add(i * ldc + j);
                    *p = if add { *p + x } else { x };
                }
            }
        }
    }
}
