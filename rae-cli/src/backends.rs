//! Choosing the compute backend: `--backend cpu|wgpu|cuda` or the best one present.

use std::fmt;

use rae_core::{Backend, CpuBackend, Precision};

use crate::errors::{CliError, CliResult};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The best backend present: CUDA, then a WGPU hardware adapter, then the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// WGPU (a GPU, or a CPU adapter such as lavapipe when it is the only one).
    Wgpu,
    /// CUDA.
    Cuda,
}

impl std::str::FromStr for BackendChoice {
    type Err = CliError;
    fn from_str(s: &str) -> Result<Self, CliError> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "wgpu" => Ok(BackendChoice::Wgpu),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(CliError::new(format!(
                "--backend {other:?}: unknown backend (choose cpu, wgpu, cuda or auto)"
            ))),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Wgpu => "wgpu",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// Work that runs on whichever backend was chosen.
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs on backend `b`.
    fn run<B: Backend>(self, b: &B) -> CliResult<Self::Output>;
}

#[cfg(feature = "cuda")]
fn cuda(device: usize) -> CliResult<rae_backend_cuda::CudaBackend> {
    rae_backend_cuda::create(device).map_err(|e| CliError::new(format!("--backend cuda: {e}")))
}

/// A WGPU backend: `--device N` picks GPU number N; otherwise the adapter named by
/// `RAE_WGPU_ADAPTER` (`auto`, `cpu`, `gpu`, `gpu:N`), where `auto` takes a GPU and falls back
/// to a CPU adapter (lavapipe) only when it is the only one. With `gpu_only` (the automatic
/// backend choice) a CPU adapter is never used: the CPU backend is faster than lavapipe.
#[cfg(feature = "wgpu")]
fn wgpu(device: Option<usize>, gpu_only: bool) -> CliResult<rae_backend_wgpu::WgpuBackend> {
    use rae_backend_wgpu::{AdapterChoice, WgpuOptions};
    let mut opts =
        WgpuOptions::from_env().map_err(|e| CliError::new(format!("--backend wgpu: {e}")))?;
    if let Some(n) = device {
        opts.adapter = AdapterChoice::Gpu(n);
    } else if gpu_only && opts.adapter == AdapterChoice::Auto {
        opts.adapter = AdapterChoice::Gpu(0);
    }
    opts.quiet = true;
    opts.build()
        .map_err(|e| CliError::new(format!("--backend wgpu: {e}")))
}

/// The line that says which backend, device and precision a command runs on, and the
/// line of a precision fallback (`asked` was given but the device cannot do it).
pub fn announcement<B: Backend>(b: &B, device: Option<usize>, asked: Option<Precision>) -> String {
    let dev = device.map(|d| format!(" (device {d})")).unwrap_or_default();
    let mut line = format!("backend: {}{dev}, precision {}", b.name(), b.precision());
    if let Some(p) = asked.filter(|&p| p != b.precision()) {
        line.push_str(&format!(
            "\nprecision: {p} needs tensor cores for {p} operands, which {} lacks; computing in {}",
            b.name(),
            b.precision()
        ));
    }
    line
}

fn announce<B: Backend>(b: &B, device: Option<usize>, asked: Option<Precision>) {
    let g = crate::dist::group();
    if g.world > 1 {
        crate::dist::tell(&format!(
            "process {} of {}: {}",
            g.rank,
            g.world,
            announcement(b, device, asked)
        ));
    } else {
        crate::dist::tell(&announcement(b, device, asked));
    }
}

/// The CPU backend in `asked` (f32 by default; tf32 and bf16 are emulated).
fn cpu(asked: Option<Precision>) -> CpuBackend {
    CpuBackend::with_precision(asked.unwrap_or_default())
}

/// Runs `job` on the chosen backend in the precision asked for (§7.5: tf32 by default on
/// CUDA, f32 elsewhere), printing which backend, device and precision it uses. A backend
/// that is not compiled in or not present is an error that says so.
pub fn dispatch<J: Job>(
    choice: BackendChoice,
    device: Option<usize>,
    precision: Option<Precision>,
    job: J,
) -> CliResult<J::Output> {
    let device = crate::dist::device(device);
    match choice {
        BackendChoice::Cpu => {
            let b = cpu(precision);
            announce(&b, None, precision);
            job.run(&b)
        }
        BackendChoice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let b =
                    cuda(device.unwrap_or(0))?.with_precision(precision.unwrap_or(Precision::Tf32));
                announce(&b, Some(device.unwrap_or(0)), precision);
                job.run(&b)
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = device;
                Err(CliError::new(
                    "--backend cuda: this rae-cli was built without the `cuda` feature",
                ))
            }
        }
        BackendChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                let b = wgpu(device, false)?.with_precision(precision.unwrap_or_default());
                announce(&b, device, precision);
                job.run(&b)
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = device;
                Err(CliError::new(
                    "--backend wgpu: this rae-cli was built without the `wgpu` feature",
                ))
            }
        }
        BackendChoice::Auto => {
            #[cfg(feature = "cuda")]
            if let Ok(b) = cuda(device.unwrap_or(0)) {
                let b = b.with_precision(precision.unwrap_or(Precision::Tf32));
                announce(&b, Some(device.unwrap_or(0)), precision);
                return job.run(&b);
            }
            #[cfg(feature = "wgpu")]
            if let Ok(b) = wgpu(device, true) {
                let b = b.with_precision(precision.unwrap_or_default());
                announce(&b, device, precision);
                return job.run(&b);
            }
            let b = cpu(precision);
            announce(&b, None, precision);
            job.run(&b)
        }
    }
}
