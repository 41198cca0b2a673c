//! A per-op timer for [`CpuBackend`](super::CpuBackend): where a model's time goes, op by op.
//!
//! When the environment variable [`ENV_VAR`] (`RAE_CPU_PROFILE`) is set to a non-empty value
//! other than `0`, every op of the CPU backend adds its wall time, a call, and (where they
//! mean something) its floating-point operations and the bytes it read plus wrote to a
//! process-wide table under its name: `matmul:nt`, `bmm:nn`, `unary:gelu_erf`,
//! `binary:mul`, `reduce:sumsq`, `layernorm`, ... The variable is read once and cached;
//! with it unset an op pays one relaxed atomic load, no clock read and no allocation.
//!
//! [`report`] formats the table sorted by total time; [`snapshot`] returns its rows and
//! [`reset`] empties it. Ops nest nowhere (an op never records another op), so the totals
//! add up to the time spent inside the backend. Composite trait methods that the CPU
//! backend leaves to their defaults (`linear`, `attention`, `softmax_scaled`, ...) show up
//! as the ops they are made of.
//!
//! ```no_run
//! use rae_core::cpu::profile;
//! // RAE_CPU_PROFILE=1 cargo run --release ...
//! profile::reset();
//! // ... run a model on a CpuBackend ...
//! if profile::enabled() {
//!     println!("{}", profile::report());
//! }
//! ```
//!
//! Only compiled with feature `std` (it needs a clock and a mutex).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU8, Ordering};
use core::time::Duration;
use std::ffi::OsStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::backend::{Binary, Reduce, Unary};
use crate::check::MatmulDims;

/// The environment variable that turns the profile on.
pub const ENV_VAR: &str = "RAE_CPU_PROFILE";

/// [`STATE`] before the environment was read.
const UNKNOWN: u8 = 0;
/// Profiling off.
const OFF: u8 = 1;
/// Profiling on.
const ON: u8 = 2;

/// Whether ops record: [`UNKNOWN`] until the first op reads [`ENV_VAR`].
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// What has been recorded so far, by op name.
static TABLE: Mutex<BTreeMap<&'static str, Totals>> = Mutex::new(BTreeMap::new());

/// The running sums of one op.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    calls: u64,
    nanos: u64,
    flops: u64,
    bytes: u64,
}

/// Whether ops are being recorded: [`ENV_VAR`] set to a non-empty value other than `0`
/// (read on the first call), unless a test [`force`]d it.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => init(),
    }
}

/// Reads the environment once; a [`force`] that came first wins.
#[cold]
#[inline(never)]
fn init() -> bool {
    let want = if switched_on(std::env::var_os(ENV_VAR).as_deref()) {
        ON
    } else {
        OFF
    };
    match STATE.compare_exchange(UNKNOWN, want, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => want == ON,
        Err(now) => now == ON,
    }
}

/// The value of [`ENV_VAR`] means "on": present, non-empty and not `0`.
fn switched_on(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Turns recording on or off for the whole process, overriding [`ENV_VAR`]. For tests, which
/// cannot set an environment variable safely while others run in parallel.
#[doc(hidden)]
pub fn force(on: bool) {
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

fn table() -> MutexGuard<'static, BTreeMap<&'static str, Totals>> {
    // A panic while the lock was held cannot leave the sums half-written in a way that
    // matters for a profile: keep them.
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets everything recorded so far.
pub fn reset() {
    table().clear();
}

/// Adds one call of `name` that took `elapsed`.
fn record(name: &'static str, elapsed: Duration, flops: u64, bytes: u64) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let mut t = table();
    let e = t.entry(name).or_default();
    e.calls += 1;
    e.nanos = e.nanos.saturating_add(nanos);
    e.flops = e.flops.saturating_add(flops);
    e.bytes = e.bytes.saturating_add(bytes);
}

/// A timer that records the op it was started for when dropped; see
/// `CpuBackend`'s `timed!` macro, which starts one only when [`enabled`].
#[derive(Debug)]
#[must_use = "a span records its op when it is dropped"]
pub struct Span {
    name: &'static str,
    flops: u64,
    bytes: u64,
    start: Instant,
}

impl Span {
    /// Starts timing one call of `name`, which does `flops` floating-point operations and
    /// reads plus writes `elems` f32 values (0 for either when not meaningful).
    #[inline]
    pub fn start(name: &'static str, flops: usize, elems: usize) -> Span {
        Span {
            name,
            flops: flops as u64,
            bytes: (elems as u64).saturating_mul(4),
            start: Instant::now(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        record(self.name, self.start.elapsed(), self.flops, self.bytes);
    }
}

/// One row of the profile: an op's calls and total time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpStats {
    /// The op (`matmul:nt`, `unary:gelu_erf`, ...).
    pub name: &'static str,
    /// How many times it ran.
    pub calls: u64,
    /// Wall time of all its calls.
    pub total: Duration,
    /// Floating-point operations of all its calls (0 when not counted).
    pub flops: u64,
    /// Bytes all its calls read plus wrote (0 when not counted).
    pub bytes: u64,
}

impl OpStats {
    /// Mean wall time of one call.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.calls) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total / n,
            Err(_) => Duration::from_secs_f64(self.total.as_secs_f64() / self.calls as f64),
        }
    }

    /// Achieved GFLOP/s, when the op's flops are counted.
    pub fn gflops(&self) -> Option<f64> {
        rate(self.flops, self.total)
    }

    /// Achieved memory throughput in GB/s (10⁹ bytes), when the op's bytes are counted.
    pub fn gbytes_per_sec(&self) -> Option<f64> {
        rate(self.bytes, self.total)
    }
}

/// `count / 10⁹` per second of `time`; `None` when nothing was counted or no time passed.
fn rate(count: u64, time: Duration) -> Option<f64> {
    let s = time.as_secs_f64();
    (count > 0 && s > 0.0).then(|| count as f64 / s / 1e9)
}

/// Every op recorded so far, largest total time first (ties by name).
pub fn snapshot() -> Vec<OpStats> {
    let mut rows: Vec<OpStats> = table()
        .iter()
        .map(|(&name, t)| OpStats {
            name,
            calls: t.calls,
            total: Duration::from_nanos(t.nanos),
            flops: t.flops,
            bytes: t.bytes,
        })
        .collect();
    rows.sort_by(|a, b| b.total.cmp(&a.total).then(a.name.cmp(b.name)));
    rows
}

/// The profile as a table sorted by total time: op, calls, total ms, share of the total %,
/// mean µs per call, GFLOP/s (matrix products) and GB/s (ops whose traffic is counted),
/// then a line with the sums.
pub fn report() -> String {
    let rows = snapshot();
    let total: Duration = rows.iter().map(|r| r.total).sum();
    let calls: u64 = rows.iter().map(|r| r.calls).sum();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>7} {:>11} {:>7} {:>11} {:>9} {:>7}",
        "op", "calls", "total ms", "share %", "mean µs", "GFLOP/s", "GB/s"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let share = |d: Duration| {
        if total.is_zero() {
            0.0
        } else {
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        }
    };
    let opt =
        |v: Option<f64>, prec: usize| v.map_or(String::new(), |v| alloc::format!("{v:.prec$}"));
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>11.3} {:>7.1} {:>11.1} {:>9} {:>7}",
            r.name,
            r.calls,
            ms(r.total),
            share(r.total),
            r.mean().as_secs_f64() * 1e6,
            opt(r.gflops(), 1),
            opt(r.gbytes_per_sec(), 2),
        );
    }
    let _ = writeln!(
        s,
        "{:<22} {:>7} {:>11.3} {:>7.1}",
        "total",
        calls,
        ms(total),
        if rows.is_empty() { 0.0 } else { 100.0 },
    );
    s
}

/// The floating-point operations of every matrix product recorded so far (2 per
/// multiply-add, the way PyTorch's `FlopCounterMode` counts them; no other op counts FLOPs).
pub fn matmul_flops() -> f64 {
    table().values().map(|t| t.flops as f64).sum()
}

/// `Π dims`, saturating instead of overflowing (the op's own checks come after).
#[inline]
pub(crate) fn numel(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// `2·batch·m·n·k`, saturating.
#[inline]
pub(crate) fn product_flops(d: &MatmulDims) -> usize {
    numel(&[2, d.batch, d.m, d.n, d.k])
}

/// The products of attention on `q` `[.., N, hd]`: `q·kᵀ` and `p·v`, `2·N²·hd` each per head
/// (the backward does twice this).
pub(crate) fn attention_flops(q: &[usize]) -> usize {
    let r = q.len();
    let heads = numel(&q[..r.saturating_sub(2)]);
    numel(&[4, heads, q[r - 2], q[r - 2], q[r - 1]])
}

/// `matmul:` (right operand broadcast: linear layers) or `bmm:` (batched right operand:
/// attention) and the transposes, `n` plain and `t` transposed, of the left then right
/// operand.
pub(crate) fn matmul_name(batched: bool, ta: bool, tb: bool) -> &'static str {
    match (batched, ta, tb) {
        (false, false, false) => "matmul:nn",
        (false, false, true) => "matmul:nt",
        (false, true, false) => "matmul:tn",
        (false, true, true) => "matmul:tt",
        (true, false, false) => "bmm:nn",
        (true, false, true) => "bmm:nt",
        (true, true, false) => "bmm:tn",
        (true, true, true) => "bmm:tt",
    }
}

/// `unary:<op>`.
pub(crate) fn unary_name(op: Unary) -> &'static str {
    match op {
        Unary::Silu => "unary:silu",
        Unary::GeluErf => "unary:gelu_erf",
        Unary::GeluTanh => "unary:gelu_tanh",
        Unary::Sigmoid => "unary:sigmoid",
        Unary::Square => "unary:square",
        Unary::Abs => "unary:abs",
        Unary::Relu => "unary:relu",
        Unary::LeakyRelu => "unary:leaky_relu",
    }
}

/// `unary_bwd:<op>`.
pub(crate) fn unary_backward_name(op: Unary) -> &'static str {
    match op {
        Unary::Silu => "unary_bwd:silu",
        Unary::GeluErf => "unary_bwd:gelu_erf",
        Unary::GeluTanh => "unary_bwd:gelu_tanh",
        Unary::Sigmoid => "unary_bwd:sigmoid",
        Unary::Square => "unary_bwd:square",
        Unary::Abs => "unary_bwd:abs",
        Unary::Relu => "unary_bwd:relu",
        Unary::LeakyRelu => "unary_bwd:leaky_relu",
    }
}

/// `binary:<op>`.
pub(crate) fn binary_name(op: Binary) -> &'static str {
    match op {
        Binary::Add => "binary:add",
        Binary::Sub => "binary:sub",
        Binary::Mul => "binary:mul",
    }
}

/// `reduce:<op>`.
pub(crate) fn reduce_name(op: Reduce) -> &'static str {
    match op {
        Reduce::Sum => "reduce:sum",
        Reduce::SumSq => "reduce:sumsq",
        Reduce::Mean => "reduce:mean",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError};

    use super::*;
    use crate::{Backend, CpuBackend};

    /// The profile tests switch the process-wide state: one at a time. (Other tests may
    /// still run CPU ops while one of these has recording on, so counts are lower bounds.)
    static SERIAL: Mutex<()> = Mutex::new(());

    fn row<'a>(rows: &'a [OpStats], name: &str) -> Option<&'a OpStats> {
        rows.iter().find(|r| r.name == name)
    }

    #[test]
    fn records_ops_when_on() -> crate::Result<()> {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        force(true);
        reset();
        let b = CpuBackend::new();
        let x = b.full(&[8, 16], 0.5)?;
        let w = b.full(&[4, 16], 0.25)?;
        let _ = b.unary(Unary::GeluErf, &x)?;
        let _ = b.unary(Unary::GeluErf, &x)?;
        let _ = b.binary(Binary::Mul, &x, &x)?;
        let _ = b.matmul(&x, &w, false, true)?;
        let _ = b.reduce(Reduce::Sum, &x, [1, 8, 16])?;
        let rows = snapshot();
        let rep = report();
        let flops = matmul_flops();
        force(false);

        let gelu = row(&rows, "unary:gelu_erf").map_or(0, |r| r.calls);
        assert!(gelu >= 2, "{rep}");
        let mul = row(&rows, "binary:mul");
        assert!(
            mul.is_some_and(|r| r.calls >= 1 && r.bytes >= 3 * 128 * 4),
            "{rep}"
        );
        let mm = row(&rows, "matmul:nt");
        assert!(
            mm.is_some_and(|r| r.calls >= 1 && r.flops >= 2 * 8 * 4 * 16),
            "{rep}"
        );
        assert!(row(&rows, "reduce:sum").is_some(), "{rep}");
        assert!(flops >= (2 * 8 * 4 * 16) as f64);
        assert!(row(&rows, "full").is_some_and(|r| r.calls >= 2), "{rep}");
        // Largest total first.
        assert!(rows.windows(2).all(|w| w[0].total >= w[1].total));
        for name in [
            "op",
            "GFLOP/s",
            "unary:gelu_erf",
            "binary:mul",
            "matmul:nt",
            "total",
        ] {
            assert!(rep.contains(name), "{name} missing from\n{rep}");
        }
        Ok(())
    }

    #[test]
    fn records_nothing_when_off() -> crate::Result<()> {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        force(false);
        reset();
        let b = CpuBackend::new();
        let x = b.full(&[8, 16], 0.5)?;
        let _ = b.unary(Unary::Silu, &x)?;
        let _ = b.matmul(&x, &x, false, true)?;
        assert!(!enabled());
        assert!(snapshot().is_empty(), "{}", report());
        assert!(report().contains("total"));
        Ok(())
    }

    #[test]
    fn reset_empties_the_table() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        record("test:reset", Duration::from_micros(3), 10, 20);
        assert!(snapshot().iter().any(|r| r.name == "test:reset"));
        reset();
        assert!(snapshot().iter().all(|r| r.name != "test:reset"));
    }

    #[test]
    fn rows_compute_rates() {
        let r = OpStats {
            name: "x",
            calls: 4,
            total: Duration::from_millis(2),
            flops: 4_000_000,
            bytes: 0,
        };
        assert_eq!(r.mean(), Duration::from_micros(500));
        assert!(r.gflops().is_some_and(|g| (g - 2.0).abs() < 1e-9));
        assert_eq!(r.gbytes_per_sec(), None);
    }

    #[test]
    fn env_values() {
        assert!(!switched_on(None));
        assert!(!switched_on(Some(OsStr::new(""))));
        assert!(!switched_on(Some(OsStr::new("0"))));
        assert!(switched_on(Some(OsStr::new("1"))));
        assert!(switched_on(Some(OsStr::new("yes"))));
    }
}
