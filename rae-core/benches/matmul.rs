//! Throughput of `CpuBackend::matmul` in GFLOP/s (2·M·N·K flops per product) at the sizes
//! of a DiT-XL linear layer (256 tokens, width 1152: the forward and the two products of
//! its backward, §3.3), of DiT-DH-S and DINOv2-B at batch 4, and at 1024³ with every
//! transpose combination.
//!
//! With the `gemm` feature both kernels run (our blocked one and the `gemm` crate's), their
//! runs interleaved; without it, only ours:
//!
//! ```text
//! cargo bench -p rae-core --bench matmul
//! cargo bench -p rae-core --bench matmul --no-default-features --features std
//! ```
//!
//! Each case runs once to warm up, then enough times to fill about two seconds (3 to 15
//! runs); the table shows the median.

use std::hint::black_box;
use std::time::Instant;

use rae_core::backend::Backend;
use rae_core::cpu::{matmul_kernel, par, set_matmul_kernel, MatmulKernel};
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
    // DiT-DH-S at batch 4 (1024 rows): the head's MLP (width 2048, hidden 8192) forward,
    // and the two products of its backward.
    Case {
        name: "DiT-DH-S head mlp fc1",
        m: 1024,
        n: 8192,
        k: 2048,
        ta: false,
        tb: true,
    },
    Case {
        name: "DiT-DH-S head dx",
        m: 1024,
        n: 2048,
        k: 8192,
        ta: false,
        tb: false,
    },
    Case {
        name: "DiT-DH-S head dW",
        m: 8192,
        n: 2048,
        k: 1024,
        ta: true,
        tb: false,
    },
    // DINOv2-B at batch 4 (1044 rows): qkv and the MLP's second linear.
    Case {
        name: "DINOv2-B qkv",
        m: 1044,
        n: 2304,
        k: 768,
        ta: false,
        tb: true,
    },
    Case {
        name: "DINOv2-B mlp fc2",
        m: 1044,
        n: 768,
        k: 3072,
        ta: false,
        tb: true,
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

/// Median seconds per product for each kernel (the runs of the kernels interleaved, so a
/// change in the machine's speed hits both alike) and the number of timed runs.
fn time_case(
    be: &CpuBackend,
    a: &Tensor<CpuBackend>,
    b: &Tensor<CpuBackend>,
    c: &Case,
    kernels: &[MatmulKernel],
) -> Result<(Vec<f64>, usize)> {
    let mut warm = 0.0f64;
    for &k in kernels {
        set_matmul_kernel(k);
        let t0 = Instant::now();
        black_box(be.matmul(a, b, c.ta, c.tb)?);
        warm = warm.max(t0.elapsed().as_secs_f64());
    }
    let runs = ((2.0 / warm.max(1e-6)) as usize).clamp(3, 15);
    let mut times = vec![Vec::with_capacity(runs); kernels.len()];
    for _ in 0..runs {
        for (&k, t) in kernels.iter().zip(&mut times) {
            set_matmul_kernel(k);
            let t0 = Instant::now();
            black_box(be.matmul(black_box(a), black_box(b), c.ta, c.tb)?);
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    let medians = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[runs / 2]
        })
        .collect();
    Ok((medians, runs))
}

fn main() -> Result<()> {
    let be = CpuBackend::new();
    let default = matmul_kernel();
    let kernels: &[MatmulKernel] = if cfg!(feature = "gemm") {
        &[MatmulKernel::Blocked, MatmulKernel::Gemm]
    } else {
        &[MatmulKernel::Blocked]
    };
    println!(
        "CpuBackend::matmul, {} thread(s), default kernel {default:?}; GFLOP/s, median of \
         timed runs after one warm-up, the kernels' runs interleaved",
        par::threads()
    );
    print!(
        "{:<24} {:>5} {:>5} {:>5} {:>3} {:>3}",
        "case", "M", "N", "K", "ta", "tb"
    );
    for k in kernels {
        print!(" {:>9}", format!("{k:?}"));
    }
    println!(" {:>5}", "runs");
    for c in CASES {
        let ad = if c.ta { [c.k, c.m] } else { [c.m, c.k] };
        let bd = if c.tb { [c.n, c.k] } else { [c.k, c.n] };
        let a = be.upload(&data(c.m * c.k, 1), &ad)?;
        let b = be.upload(&data(c.k * c.n, 2), &bd)?;
        let (secs, runs) = time_case(&be, &a, &b, c, kernels)?;
        print!(
            "{:<24} {:>5} {:>5} {:>5} {:>3} {:>3}",
            c.name,
            c.m,
            c.n,
            c.k,
            if c.ta { "T" } else { "N" },
            if c.tb { "T" } else { "N" },
        );
        for s in secs {
            print!(" {:>9.1}", 2.0 * (c.m * c.n * c.k) as f64 / s / 1e9);
        }
        println!(" {runs:>5}");
    }
    set_matmul_kernel(default);
    Ok(())
}
