//! Throughput of `CpuBackend::matmul` in GFLOP/s (2·M·N·K flops per product) at the sizes
//! of a DiT-XL linear layer (256 tokens, width 1152: the forward and the two products of
//! its backward, §3.3) and at 1024³ with every transpose combination.
//!
//! ```text
//! cargo bench -p rae-core --bench matmul                                       # gemm crate
//! cargo bench -p rae-core --bench matmul --no-default-features --features std  # blocked loop
//! ```
//!
//! Each case runs once to warm up, then enough times to fill about two seconds (3 to 15
//! runs); the table shows the median.

use std::hint::black_box;
use std::time::Instant;

use rae_core::backend::Backend;
use rae_core::cpu::par;
use rae_core::{CpuBackend, Result, Tensor};

/// One product `op(a)[M, K] · op(b)[K, N]`.
struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

const CASES: &[Case] = &[
    // y = x·Wᵀ: x [256, 1152], W [1152, 1152].
    Case {
        name: "linear fwd x·Wᵀ",
        m: 256,
        n: 1152,
        k: 1152,
        ta: false,
        tb: true,
    },
    // dx = dy·W.
    Case {
        name: "linear bwd dx = dy·W",
        m: 256,
        n: 1152,
        k: 1152,
        ta: false,
        tb: false,
    },
    // dW = dyᵀ·x: contracted over the 256 tokens.
    Case {
        name: "linear bwd dW = dyᵀ·x",
        m: 1152,
        n: 1152,
        k: 256,
        ta: true,
        tb: false,
    },
    Case {
        name: "square",
        m: 1024,
        n: 1024,
        k: 1024,
        ta: false,
        tb: false,
    },
    Case {
        name: "square",
        m: 1024,
        n: 1024,
        k: 1024,
        ta: false,
        tb: true,
    },
    Case {
        name: "square",
        m: 1024,
        n: 1024,
        k: 1024,
        ta: true,
        tb: false,
    },
    Case {
        name: "square",
        m: 1024,
        n: 1024,
        k: 1024,
        ta: true,
        tb: true,
    },
];

/// Deterministic values in `[-1, 1)`.
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Median seconds per product and the number of timed runs.
fn time_case(
    be: &CpuBackend,
    a: &Tensor<CpuBackend>,
    b: &Tensor<CpuBackend>,
    c: &Case,
) -> Result<(f64, usize)> {
    let t0 = Instant::now();
    black_box(be.matmul(a, b, c.ta, c.tb)?);
    let warm = t0.elapsed().as_secs_f64();
    let runs = ((2.0 / warm.max(1e-6)) as usize).clamp(3, 15);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        black_box(be.matmul(black_box(a), black_box(b), c.ta, c.tb)?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[runs / 2], runs))
}

fn main() -> Result<()> {
    let be = CpuBackend::new();
    let path = if cfg!(feature = "gemm") {
        "gemm crate"
    } else {
        "blocked fallback (no gemm)"
    };
    println!(
        "CpuBackend::matmul, {path}, {} thread(s); median of timed runs after one warm-up",
        par::threads()
    );
    println!(
        "{:<24} {:>5} {:>5} {:>5} {:>3} {:>3} {:>11} {:>9} {:>5}",
        "case", "M", "N", "K", "ta", "tb", "median ms", "GFLOP/s", "runs"
    );
    for c in CASES {
        let ad = if c.ta { [c.k, c.m] } else { [c.m, c.k] };
        let bd = if c.tb { [c.n, c.k] } else { [c.k, c.n] };
        let a = be.upload(&data(c.m * c.k, 1), &ad)?;
        let b = be.upload(&data(c.k * c.n, 2), &bd)?;
        let (secs, runs) = time_case(&be, &a, &b, c)?;
        let gflops = 2.0 * (c.m * c.n * c.k) as f64 / secs / 1e9;
        println!(
            "{:<24} {:>5} {:>5} {:>5} {:>3} {:>3} {:>11.2} {:>9.1} {:>5}",
            c.name,
            c.m,
            c.n,
            c.k,
            if c.ta { "T" } else { "N" },
            if c.tb { "T" } else { "N" },
            secs * 1e3,
            gflops,
            runs
        );
    }
    Ok(())
}
