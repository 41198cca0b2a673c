//! The suite's harness: tolerances, the worst-error record, the seeded generator, the
//! per-op context that runs an op on the backend under test and on the CPU oracle, and the
//! backends of a test binary (created once, or skipped with a printed reason).

// Test code: a failing op or upload is a test failure, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use rae_backend_cuda::CudaBackend;
use rae_backend_wgpu::{WgpuBackend, WgpuOptions};

use rae_core::backend::Backend;
use rae_core::rng::PhiloxStream;
use rae_core::{CpuBackend, Tensor};

/// An element-wise tolerance: `|got − want| ≤ abs + rel·|want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    /// Absolute part.
    pub abs: f64,
    /// Relative part.
    pub rel: f64,
}

impl Tol {
    /// Bit-for-bit equal values (layout ops, gathers, Philox fills).
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

    /// A tolerance from its absolute and relative parts.
    pub const fn new(abs: f64, rel: f64) -> Self {
        Tol { abs, rel }
    }
}

/// Worst errors per `"<backend> <op>"`: (largest absolute error, largest relative error
/// over elements with `|want| > 1e-3`).
static WORST: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());

/// The worst errors recorded so far, sorted by key `"<backend> <op>"`.
pub fn worst_errors() -> Vec<(String, f64, f64)> {
    let w = WORST.lock().unwrap_or_else(|e| e.into_inner());
    w.iter().map(|(k, &(a, r))| (k.clone(), a, r)).collect()
}

fn record(key: &str, abs: f64, rel: f64) {
    let mut w = WORST.lock().unwrap_or_else(|e| e.into_inner());
    let e = w.entry(key.to_string()).or_insert((0.0, 0.0));
    e.0 = e.0.max(abs);
    e.1 = e.1.max(rel);
}

/// Values from a seeded Philox stream (reproducible shapes and data).
#[derive(Debug, Clone)]
pub struct Gen(PhiloxStream);

impl Gen {
    /// A generator on stream `stream` of seed 2024.
    pub fn new(stream: u64) -> Self {
        Gen(PhiloxStream::new(2024, stream))
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut v = vec![0.0f32; n];
        self.0.uniforms(&mut v);
        v.iter_mut().for_each(|x| *x = lo + (hi - lo) * *x);
        v
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        let u = self.0.uniform() as f64;
        (lo + ((hi - lo + 1) as f64 * u) as usize).min(hi)
    }
}

/// One op test's state: the backend under test, the oracle, the data generator and the
/// backend's label.
pub struct Ctx<'a, B: Backend> {
    /// The backend under test.
    pub b: &'a B,
    /// The oracle.
    pub cpu: CpuBackend,
    /// Data and shape generator.
    pub gen: Gen,
    label: String,
    op: &'static str,
}

impl<B: Backend> std::fmt::Debug for Ctx<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.label)
            .field("op", &self.op)
            .finish()
    }
}

/// A tensor on the backend under test and the same values on the CPU.
pub type Pair<B> = (Tensor<B>, Tensor<CpuBackend>);

impl<'a, B: Backend> Ctx<'a, B> {
    /// A context for op `op` (its name keys the worst-error table).
    pub fn new(b: &'a B, op: &'static str) -> Self {
        let stream = op
            .bytes()
            .fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
        Ctx {
            b,
            cpu: CpuBackend::new(),
            gen: Gen::new(stream),
            label: b.name(),
            op,
        }
    }

    /// Uploads `data` to both backends.
    pub fn pair_from(&self, data: &[f32], dims: &[usize]) -> Pair<B> {
        (
            self.b
                .upload(data, dims)
                .expect("upload to the backend under test"),
            self.cpu.upload(data, dims).expect("upload to the CPU"),
        )
    }

    /// Random values uniform in `[lo, hi)` on both backends.
    pub fn rand(&mut self, dims: &[usize], lo: f32, hi: f32) -> Pair<B> {
        let n: usize = dims.iter().product();
        let data = self.gen.vec(n, lo, hi);
        self.pair_from(&data, dims)
    }

    /// Fills the memory pool with NaN buffers of `n` floats (allocated, then dropped), so
    /// the next allocation of that size likely reuses one: an unwritten output element then
    /// reads back as NaN.
    pub fn poison(&self, n: usize) {
        let bufs: Vec<Tensor<B>> = (0..4)
            .map(|_| self.b.full(&[n], f32::NAN).expect("NaN fill"))
            .collect();
        self.b.sync().expect("sync after the NaN fill");
        drop(bufs);
    }

    /// Compares `got` with `want` (shape and values); panics naming the op, the case and
    /// the first element out of tolerance.
    pub fn check(&self, case: &str, got: &Tensor<B>, want: &Tensor<CpuBackend>, tol: Tol) {
        assert_eq!(
            got.dims(),
            want.dims(),
            "{} {}: {case}: shape differs from the CPU's",
            self.label,
            self.op
        );
        let g = self.b.download(got).expect("download");
        let w = self.cpu.download(want).expect("download from the CPU");
        self.check_vals(case, &g, &w, tol);
    }

    /// [`Ctx::check`] on host values.
    pub fn check_vals(&self, case: &str, got: &[f32], want: &[f32], tol: Tol) {
        assert_eq!(
            got.len(),
            want.len(),
            "{} {}: {case}: length differs",
            self.label,
            self.op
        );
        let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g64, w64) = (g as f64, w as f64);
            let err = (g64 - w64).abs();
            let ok = if tol == Tol::EXACT {
                g.to_bits() == w.to_bits()
            } else {
                err <= tol.abs + tol.rel * w64.abs()
            };
            assert!(
                ok,
                "{} {}: {case}: element {i} of {}: got {g:e}, CPU {w:e} (error {err:.3e}, \
                 tolerance {:.1e} + {:.1e}·|want|)",
                self.label,
                self.op,
                got.len(),
                tol.abs,
                tol.rel
            );
            worst_abs = worst_abs.max(err);
            if w64.abs() > 1e-3 {
                worst_rel = worst_rel.max(err / w64.abs());
            }
        }
        record(&format!("{} {}", self.label, self.op), worst_abs, worst_rel);
    }

    /// Prints the worst errors of this op (shown with `--nocapture`).
    pub fn report(&self) {
        let key = format!("{} {}", self.label, self.op);
        if let Some((_, a, r)) = worst_errors().into_iter().find(|(k, _, _)| *k == key) {
            eprintln!("WORST {key}: abs {a:.3e} rel {r:.3e}");
        }
    }
}

/// Element-wise sizes: scalar-path lengths (not multiples of 4), vector-path lengths,
/// size-1 axes, token counts 257 and 261, and one size that needs several grid rows.
pub(super) const ELEMENTWISE_DIMS: &[&[usize]] = &[
    &[1],
    &[3],
    &[4],
    &[7],
    &[2, 3, 5],
    &[257, 3],
    &[261, 8],
    &[1, 261, 1],
    &[33_001],
    &[64, 1024],
];

/// Prints `SKIPPED: <why>` once per test binary and reason, straight to the process's stderr:
/// the test harness captures `eprintln!` of passing tests, which would hide the skip.
pub fn report_skip(why: &str) {
    use std::io::Write;
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.iter().any(|s| s == why) {
        seen.push(why.to_string());
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
    }
}

/// The WGPU backend for a test, chosen by `RAE_WGPU_ADAPTER` (a GPU first, else lavapipe),
/// created once per test binary. `None` (after printing `SKIPPED: wgpu backend not
/// present: <why>`) when there is no adapter; with `RAE_REQUIRE_WGPU=1` a missing adapter
/// panics instead, so CI cannot skip silently.
pub fn wgpu_or_skip() -> Option<&'static WgpuBackend> {
    static B: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    let b = B.get_or_init(|| {
        WgpuOptions::from_env()
            .and_then(|o| o.build())
            .map_err(|e| e.to_string())
    });
    match b {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("RAE_REQUIRE_WGPU").as_deref() == Ok("1") {
                panic!("RAE_REQUIRE_WGPU=1 but the wgpu backend is not available: {e}");
            }
            report_skip(&format!("wgpu backend not present: {e}"));
            None
        }
    }
}

/// The CUDA backend on device 0 for a test, created once per test binary; `None` (after
/// printing `SKIPPED: cuda backend not present: <why>`) without a driver or device.
pub fn cuda_or_skip() -> Option<&'static CudaBackend> {
    static B: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    match B.get_or_init(|| rae_backend_cuda::create(0).map_err(|e| e.to_string())) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("RAE_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("RAE_REQUIRE_CUDA=1 but the cuda backend is not available: {e}");
            }
            report_skip(&format!("cuda backend not present: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "element 1 of 3")]
    fn check_rejects_a_value_out_of_tolerance() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals(
            "case",
            &[1.0, 2.5, 3.0],
            &[1.0, 2.0, 3.0],
            Tol::new(0.1, 0.1),
        );
    }

    #[test]
    #[should_panic(expected = "got NaN")]
    fn check_rejects_nan_even_with_a_huge_tolerance() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals("case", &[f32::NAN], &[1.0], Tol::new(1e30, 1e30));
    }

    #[test]
    fn exact_tolerance_compares_bits() {
        let cpu = CpuBackend::new();
        let cx = Ctx::new(&cpu, "self-test");
        cx.check_vals("case", &[1.0, -0.0], &[1.0, -0.0], Tol::EXACT);
        let r = std::panic::catch_unwind(|| {
            cx.check_vals("case", &[0.0], &[-0.0], Tol::EXACT);
        });
        assert!(r.is_err(), "+0 and −0 differ bit-wise");
    }

    #[test]
    fn gen_is_reproducible_and_in_range() {
        let mut a = Gen::new(3);
        let mut b = Gen::new(3);
        let va = a.vec(100, -2.0, 5.0);
        assert_eq!(va, b.vec(100, -2.0, 5.0));
        assert!(va.iter().all(|&x| (-2.0..5.0).contains(&x)));
        for _ in 0..100 {
            let k = a.int(3, 9);
            assert!((3..=9).contains(&k));
        }
    }
}
