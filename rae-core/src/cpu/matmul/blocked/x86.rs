//! x86_64 levels of the blocked product: feature detection (with or without `std`) and
//! the AVX2 / AVX-512 vector types the generic micro-kernel is compiled with.

use core::arch::x86_64::*;

use super::kernel::Simd;
use super::{work, Job, AVX2_MR, AVX2_NV, AVX512_MR, AVX512_NV};

/// AVX2 and FMA usable (CPU and OS).
pub(super) fn has_avx2_fma() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(feature = "std"))]
    {
        cpuid_levels().0
    }
}

/// AVX-512F usable (CPU and OS), on top of AVX2 and FMA.
pub(super) fn has_avx512() -> bool {
    #[cfg(feature = "std")]
    {
        has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(feature = "std"))]
    {
        cpuid_levels().1
    }
}

/// `(AVX2 + FMA, AVX-512F)` from `cpuid` and the OS-enabled state in XCR0: what `std`'s
/// detection does, for builds without `std`.
#[cfg(any(test, not(feature = "std")))]
pub(super) fn cpuid_levels() -> (bool, bool) {
    // SAFETY (all `cpuid` calls): the instruction exists on every x86_64 CPU; leaf 7 is
    // read only when leaf 0 reports it. (`__cpuid` is a safe fn on newer compilers.)
    #[allow(unused_unsafe)]
    let max_leaf = unsafe { __cpuid(0) }.eax;
    if max_leaf < 7 {
        return (false, false);
    }
    #[allow(unused_unsafe)]
    let l1 = unsafe { __cpuid(1) };
    let fma = l1.ecx & (1 << 12) != 0;
    let osxsave = l1.ecx & (1 << 27) != 0;
    let avx = l1.ecx & (1 << 28) != 0;
    if !(fma && osxsave && avx) {
        return (false, false);
    }
    // SAFETY: OSXSAVE is set, so the OS enabled XGETBV.
    let xcr0 = unsafe { xcr0() };
    // XMM and YMM state (bits 1, 2); AVX-512 adds opmask, ZMM0-15 upper, ZMM16-31 (5-7).
    let os_avx = xcr0 & 0b110 == 0b110;
    let os_avx512 = os_avx && xcr0 & 0b1110_0000 == 0b1110_0000;
    #[allow(unused_unsafe)]
    let l7 = unsafe { __cpuid_count(7, 0) };
    let avx2 = os_avx && l7.ebx & (1 << 5) != 0;
    let avx512f = avx2 && os_avx512 && l7.ebx & (1 << 16) != 0;
    (avx2, avx512f)
}

/// XCR0, the OS-enabled register state.
///
/// # Safety
/// Only after CPUID.1:ECX.OSXSAVE was seen set.
#[cfg(any(test, not(feature = "std")))]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE; the xsave feature is enabled on this function.
    #[allow(unused_unsafe)]
    unsafe {
        _xgetbv(0)
    }
}

/// A worker of `job` with the AVX-512 kernel (packing included).
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA; `job` is sized for `AVX512_MR × 32` tiles and
/// satisfies the rest of [`work`]'s contract.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn work_avx512(job: &Job<'_>) {
    // SAFETY: this function carries the features `Avx512` needs; the rest is the caller's.
    unsafe { work::<Avx512, AVX512_MR, AVX512_NV>(job) }
}

/// A worker of `job` with the AVX2 kernel (packing included).
///
/// # Safety
/// The CPU supports AVX2 and FMA; `job` is sized for `AVX2_MR × 16` tiles and satisfies
/// the rest of [`work`]'s contract.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn work_avx2(job: &Job<'_>) {
    // SAFETY: this function carries the features `Avx2` needs; the rest is the caller's.
    unsafe { work::<Avx2, AVX2_MR, AVX2_NV>(job) }
}

/// A [`Simd`] vector type over one register width's intrinsics. The safety contract is the
/// trait's: the caller runs with the features the intrinsics need (AVX-512F, or AVX2 and
/// FMA) and passes pointers valid for `LANES` reads or writes.
macro_rules! simd_impl {
    ($name:ident, $reg:ty, $lanes:expr, $zero:ident, $splat:ident, $load:ident, $store:ident,
     $madd:ident, $add:ident) => {
        impl Simd for $name {
            type R = $reg;
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn zero() -> $reg {
                // SAFETY: the caller has the features enabled (trait contract).
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> $reg {
                // SAFETY: as above.
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> $reg {
                // SAFETY: as above; `p` is valid for LANES reads.
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: $reg) {
                // SAFETY: as above; `p` is valid for LANES writes.
                unsafe { $store(p, v) }
            }
            #[inline(always)]
            unsafe fn madd(a: $reg, b: $reg, c: $reg) -> $reg {
                // SAFETY: as above (FMA is part of both feature sets).
                unsafe { $madd(a, b, c) }
            }
            #[inline(always)]
            unsafe fn add(a: $reg, b: $reg) -> $reg {
                // SAFETY: as above.
                unsafe { $add(a, b) }
            }
            #[inline(always)]
            unsafe fn transpose8(src: *const f32, ls: usize, dst: *mut f32, ld: usize) {
                // SAFETY: the caller has AVX enabled and valid blocks (trait contract).
                unsafe { transpose8_avx(src, ls, dst, ld) }
            }
            #[inline(always)]
            unsafe fn prefetch(p: *const f32) {
                // SAFETY: a prefetch never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
            }
        }
    };
}

/// 16 lanes of AVX-512 (its intrinsics and target feature are stable from Rust 1.89).
struct Avx512;
simd_impl!(
    Avx512,
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps
);

/// 8 lanes of AVX2 with FMA.
struct Avx2;
simd_impl!(
    Avx2,
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps
);

/// [`Simd::transpose8`] in eight 256-bit rows: interleave pairs of rows, then pairs of
/// pairs, then swap 128-bit halves.
///
/// # Safety
/// AVX is enabled; `src` is valid for 8 rows of 8 floats `ls` apart, `dst` likewise `ld`.
#[inline(always)]
unsafe fn transpose8_avx(src: *const f32, ls: usize, dst: *mut f32, ld: usize) {
    // SAFETY: as the function's contract.
    unsafe {
        let r: [__m256; 8] = core::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ls)));
        // Per 128-bit half: t[2j] = (r[2j][0], r[2j+1][0], r[2j][1], r[2j+1][1]), t[2j+1]
        // the same for elements 2 and 3.
        let t: [__m256; 8] = core::array::from_fn(|i| {
            let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(x, y)
            } else {
                _mm256_unpackhi_ps(x, y)
            }
        });
        // s[4h + c] holds element c (and c + 4 in the upper half) of rows 4h..4h + 4.
        let s: [__m256; 8] = core::array::from_fn(|i| {
            let (h, c) = (i / 4, i % 4);
            let (x, y) = (t[4 * h + c / 2], t[4 * h + 2 + c / 2]);
            if c % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(x, y)
            } else {
                _mm256_shuffle_ps::<0xEE>(x, y)
            }
        });
        for c in 0..4 {
            _mm256_storeu_ps(
                dst.add(c * ld),
                _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c]),
            );
            _mm256_storeu_ps(
                dst.add((c + 4) * ld),
                _mm256_permute2f128_ps::<0x31>(s[c], s[4 + c]),
            );
        }
    }
}
