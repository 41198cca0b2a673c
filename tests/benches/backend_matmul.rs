//! Matrix-product throughput of every backend present (CPU, WGPU, CUDA) on the shapes of
//! the models: `256×1152 · 1152×1152` (a DiT-XL linear layer on 256 tokens) and `1024³`.
//! Lavapipe (WGPU on the CPU) is expected to be slow; its numbers are for the record.
//!
//! `XDG_RUNTIME_DIR=/tmp cargo bench -p rae-tests --bench backend_matmul`

use std::time::{Duration, Instant};

use rae_core::{Backend, CpuBackend};

/// Median GFLOP/s of `a·b` (`m×k · k×n`) over repetitions that take about a second.
fn gflops<B: Backend>(b: &B, m: usize, k: usize, n: usize) -> Result<f64, rae_core::Error> {
    let av: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let bv: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    let a = b.upload(&av, &[m, k])?;
    let bm = b.upload(&bv, &[k, n])?;
    // Warm-up: compiles the kernel and fills the memory pool.
    let c = b.matmul(&a, &bm, false, false)?;
    b.sync()?;
    drop(c);
    let mut times = Vec::new();
    let budget = Instant::now();
    while times.len() < 3 || (budget.elapsed() < Duration::from_secs(2) && times.len() < 50) {
        let t = Instant::now();
        let c = b.matmul(&a, &bm, false, false)?;
        b.sync()?;
        times.push(t.elapsed().as_secs_f64());
        drop(c);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(2.0 * (m * k * n) as f64 / median / 1e9)
}

fn run<B: Backend>(b: &B, what: &str) {
    for (m, k, n) in [(256, 1152, 1152), (1024, 1024, 1024)] {
        let label = format!("{} [{what}]", b.name());
        match gflops(b, m, k, n) {
            Ok(g) => println!("{label:<72} {m}x{k}x{n}: {g:8.2} GFLOP/s"),
            Err(e) => println!("{label:<72} {m}x{k}x{n}: error: {e}"),
        }
    }
}

/// The cube backends with each matmul kernel.
fn run_cube<R: rae_kernels::cubecl::Runtime>(b: &rae_kernels::CubeBackend<R>) {
    use rae_kernels::MatmulKernel;
    run(b, "cubek unit (default)");
    run(&b.clone().with_matmul(MatmulKernel::Tiled), "rae tiled");
}

fn main() {
    run(&CpuBackend::new(), "gemm crate");
    match rae_backend_wgpu::create() {
        Ok(b) => run_cube(&b),
        Err(e) => println!("SKIPPED: wgpu backend not present: {e}"),
    }
    match rae_backend_cuda::create(0) {
        Ok(b) => {
            run_cube(&b);
            run(
                &b.clone().with_matmul(rae_kernels::MatmulKernel::CubekCmma),
                "cubek cmma (tf32)",
            );
        }
        Err(e) => println!("SKIPPED: cuda backend not present: {e}"),
    }
}
