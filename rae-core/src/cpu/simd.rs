//! Element-wise loops compiled for the widest vector unit the CPU has.
//!
//! The crate is built for the baseline of its target (SSE2 on x86-64: four lanes), so a loop
//! such as GELU's runs four values at a time even on a CPU with AVX-512. [`wide`] runs a
//! closure inside a function compiled with AVX-512 (or AVX2) enabled, chosen at run time:
//! the closure and the `#[inline]` kernels it calls are inlined there and vectorised with
//! the wider registers. Only the width changes: LLVM does not contract `a·b + c` into a
//! fused multiply-add unless asked, so every value is the same bits on every path.

/// Runs `f`, compiled with the widest vector extension this CPU supports (x86-64 with
/// `std`: AVX-512F, else AVX2; elsewhere `f` as it is).
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { x86::avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

/// `wide_loop! { body }`: runs the block through [`wide`] as a closure marked `#[inline(always)]`.
/// Without the mark LLVM may leave a large closure (a GELU loop) as a call out of the
/// AVX-512 function, and the loop then runs at the baseline width: every caller goes
/// through this macro so none can forget it.
macro_rules! wide_loop {
    ($($body:tt)*) => {
        $crate::cpu::simd::wide(
            #[inline(always)]
            || { $($body)* },
        )
    };
}
pub(crate) use wide_loop;

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86 {
    /// `f` compiled with AVX-512F.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx2,avx")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `f` compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,avx")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::wide;
    use crate::cpu::ops;
    use alloc::vec::Vec;

    /// The wide loops give the bits of one value at a time (a call through an opaque
    /// function pointer, which cannot be vectorised).
    #[test]
    fn wide_loops_give_the_same_bits() {
        let xs: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 1e-3).collect();
        macro_rules! check {
            ($f:path) => {{
                let scalar = core::hint::black_box($f as fn(f32) -> f32);
                let want: Vec<u32> = xs.iter().map(|&x| scalar(x).to_bits()).collect();
                let mut out = alloc::vec![0.0f32; xs.len()];
                wide(|| {
                    for (o, &x) in out.iter_mut().zip(&xs) {
                        *o = $f(x);
                    }
                });
                let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                assert!(got == want, "{}", stringify!($f));
            }};
        }
        check!(ops::gelu_erf);
        check!(ops::gelu_erf_grad);
        check!(ops::exp);
        check!(ops::silu);
        check!(ops::erf);
    }
}
