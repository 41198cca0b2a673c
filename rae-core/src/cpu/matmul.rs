//! CPU matrix products: the `gemm` crate when the feature is on, our own blocked kernel
//! ([`blocked`]) otherwise (see [`kernel`]).

use alloc::vec::Vec;

use super::par;
use crate::check::MatmulDims;
use crate::error::Result;
use crate::limits::try_copy;
use crate::precision::Precision;

mod blocked;
pub mod weights_t;

/// Which code computes the CPU backend's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Our blocked kernel: AVX-512, AVX2 + FMA or portable, chosen at run time.
    Blocked,
    /// The `gemm` crate (only with the `gemm` feature).
    Gemm,
}

/// 0: not chosen yet; else `1 + Kernel as usize`.
static KERNEL: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The kernel products use: the `gemm` crate with the `gemm` feature, else ours.
/// `RAE_CPU_MATMUL=blocked` (read once, with `std`) or [`set_kernel`] picks ours with the
/// feature on, to compare the two. Measured in the models (DiT-DH-S training step and
/// forward, DINOv2-B forward, 2 threads, AVX-512): `gemm` is 10–30% faster, so it stays
/// the default.
pub fn kernel() -> Kernel {
    use core::sync::atomic::Ordering;
    match KERNEL.load(Ordering::Relaxed) {
        1 => return Kernel::Blocked,
        2 => return Kernel::Gemm,
        _ => {}
    }
    #[allow(unused_mut)]
    let mut chosen = if cfg!(feature = "gemm") {
        Kernel::Gemm
    } else {
        Kernel::Blocked
    };
    #[cfg(feature = "std")]
    if std::env::var("RAE_CPU_MATMUL").as_deref() == Ok("blocked") {
        chosen = Kernel::Blocked;
    }
    set_kernel(chosen);
    chosen
}

/// Makes every later product use `kernel` (for benchmarks comparing the two). Asking for
/// [`Kernel::Gemm`] without the `gemm` feature keeps [`Kernel::Blocked`].
pub fn set_kernel(kernel: Kernel) {
    let kernel = if cfg!(feature = "gemm") {
        kernel
    } else {
        Kernel::Blocked
    };
    KERNEL.store(1 + kernel as usize, core::sync::atomic::Ordering::Relaxed);
}

/// [`matmul`] on operands first rounded to `precision` (§7.5: what tensor cores compute,
/// f32 accumulation); plain [`matmul`] for f32.
pub fn matmul_in(
    precision: Precision,
    a: &[f32],
    b: &[f32],
    d: &MatmulDims,
    ta: bool,
    tb: bool,
) -> Result<Vec<f32>> {
    rounded(precision, a, b, |a, b| matmul(a, b, d, ta, tb))
}

/// A linear layer's `x[rows, k] · wᵀ (+ bias)` (`w` `[n, k]`) in one pass over the output:
/// with a bias the output starts as the bias rows and the product accumulates into it,
/// instead of a product followed by a separate bias pass. Operands are rounded to
/// `precision` first as in [`matmul_in`]. `wt`, when given, is `w` in `[k, n]` order (see
/// [`weights_t`]) and is used in its place for f32.
pub fn linear_in(
    precision: Precision,
    x: &[f32],
    w: &[f32],
    wt: Option<&[f32]>,
    bias: Option<&[f32]>,
    d: &MatmulDims,
) -> Result<Vec<f32>> {
    let (rows, n, k) = (d.batch * d.m, d.n, d.k);
    let mut out = match bias {
        // Every value is overwritten by the bias, so a kept buffer need not be zeroed first.
        Some(bias) => {
            let mut out = super::pool::scratch(rows * n);
            par::for_rows(&mut out, n.max(1), 1, |_, part| {
                for row in part.chunks_mut(n.max(1)) {
                    row.copy_from_slice(bias);
                }
            });
            out
        }
        None if k == 0 => super::pool::zeroed(rows * n),
        None => output(rows * n),
    };
    if rows == 0 || n == 0 || k == 0 {
        return Ok(out);
    }
    let acc = bias.is_some();
    if let (Some(wt), Precision::Fp32) = (wt, precision) {
        product(x, wt, &mut out, rows, n, k, false, false, true, acc);
        return Ok(out);
    }
    rounded(precision, x, w, |x, w| {
        product(x, w, &mut out, rows, n, k, false, true, true, acc)
    })?;
    Ok(out)
}

/// `f(a, b)` on the operands as they are for f32, else on copies rounded to `precision`.
fn rounded<R>(
    precision: Precision,
    a: &[f32],
    b: &[f32],
    f: impl FnOnce(&[f32], &[f32]) -> R,
) -> Result<R> {
    if precision == Precision::Fp32 {
        return Ok(f(a, b));
    }
    let mut ra = try_copy("matmul operand", a)?;
    let mut rb = try_copy("matmul operand", b)?;
    precision.round_slice(&mut ra);
    precision.round_slice(&mut rb);
    Ok(f(&ra, &rb))
}

/// Strides of one operand of `[rows, cols]` logical shape stored plain or transposed.
#[derive(Debug, Clone, Copy)]
struct Operand {
    /// Offset between consecutive rows of the logical matrix.
    rs: usize,
    /// Offset between consecutive columns of the logical matrix.
    cs: usize,
}

impl Operand {
    fn new(rows: usize, cols: usize, transposed: bool) -> Self {
        if transposed {
            // Stored as [cols, rows].
            let _ = cols;
            Operand { rs: 1, cs: rows }
        } else {
            let _ = rows;
            Operand { rs: cols, cs: 1 }
        }
    }
}

/// A buffer for the output of [`product`]s with `acc = false` and `k > 0`: both kernels
/// write every value, so a kept buffer needs no zeroing pass.
pub(super) fn output(len: usize) -> Vec<f32> {
    super::pool::scratch(len)
}

/// `out = op(a) · op(b)` for every batch entry; `out` is `[batch, m, n]`.
pub fn matmul(a: &[f32], b: &[f32], d: &MatmulDims, ta: bool, tb: bool) -> Vec<f32> {
    let (m, n, k) = (d.m, d.n, d.k);
    let mut out = match k {
        0 => super::pool::zeroed(d.batch * m * n),
        _ => output(d.batch * m * n),
    };
    if m == 0 || n == 0 || d.batch == 0 {
        return out;
    }
    if k == 0 {
        return out;
    }
    // A broadcast right operand and a plain left operand fold the batch into the rows.
    if !d.b_batched && !ta {
        product(a, b, &mut out, d.batch * m, n, k, false, tb, true, false);
        return out;
    }
    let a_stride = m * k;
    let b_stride = if d.b_batched { k * n } else { 0 };
    let threads = par::threads();
    let parallel_batches = threads > 1 && d.batch >= threads && m * n * k >= 1 << 12;
    if parallel_batches {
        par::for_rows(
            &mut out,
            m * n,
            usize::MAX / (m * n).max(1),
            |first, chunk| {
                for (j, o) in chunk.chunks_mut(m * n).enumerate() {
                    let i = first + j;
                    let ai = &a[i * a_stride..(i + 1) * a_stride];
                    let bi = &b[i * b_stride..i * b_stride + k * n];
                    product(ai, bi, o, m, n, k, ta, tb, false, false);
                }
            },
        );
    } else {
        for (i, o) in out.chunks_mut(m * n).enumerate() {
            let ai = &a[i * a_stride..(i + 1) * a_stride];
            let bi = &b[i * b_stride..i * b_stride + k * n];
            product(ai, bi, o, m, n, k, ta, tb, true, false);
        }
    }
    out
}

/// One product `out[m, n] = op(a)[m, k] · op(b)[k, n]`, added to what `out` holds when
/// `acc` (else `out` is overwritten).
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    threaded: bool,
    acc: bool,
) {
    let oa = Operand::new(m, k, ta);
    let ob = Operand::new(k, n, tb);
    #[cfg(feature = "gemm")]
    if kernel() == Kernel::Gemm {
        debug_assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
        let par = if threaded && par::threads() > 1 && m * n * k >= 1 << 15 {
            gemm::Parallelism::Rayon(par::threads())
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the slices hold at least m·k, k·n and m·n elements (checked by the
        // caller's shape validation) and the strides address exactly those ranges.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                acc,
                a.as_ptr(),
                oa.cs as isize,
                oa.rs as isize,
                b.as_ptr(),
                ob.cs as isize,
                ob.rs as isize,
                if acc { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        return;
    }
    blocked::blocked(a, b, out, m, n, k, oa, ob, threaded, acc);
}
