//! # rae-backend-wgpu
//!
//! [`WgpuBackend`]: the kernels of `rae-kernels` compiled to WGSL through CubeCL's WGPU
//! runtime (the default WGSL compiler, not SPIR-V). It prefers a discrete GPU, then an
//! integrated or virtual one, and falls back to a CPU adapter (Mesa's lavapipe) when asked
//! or when that is the only adapter.
//!
//! ```no_run
//! use rae_core::Backend;
//! let b = rae_backend_wgpu::WgpuOptions::from_env()?.build()?;
//! eprintln!("using {}", b.name());
//! # Ok::<(), rae_core::Error>(())
//! ```

#![warn(missing_docs)]

use std::fmt;

use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Runtime;
use rae_core::{Error, Result};
use rae_kernels::CubeBackend;

/// The rae backend on a WGPU adapter: [`CubeBackend`] on CubeCL's WGPU runtime.
pub type WgpuBackend = CubeBackend<WgpuRuntime>;

/// The environment variable read by [`WgpuOptions::from_env`]: `auto` (default), `cpu`,
/// `gpu` or `gpu:N`.
pub const ADAPTER_ENV: &str = "RAE_WGPU_ADAPTER";

/// Which adapter [`WgpuOptions::build`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// The first GPU (discrete, then integrated, then virtual); a CPU adapter only when no
    /// GPU exists.
    #[default]
    Auto,
    /// GPU number `n` in the order of [`adapters`] restricted to GPUs; an error when
    /// there is no such GPU.
    Gpu(usize),
    /// A CPU adapter (lavapipe, SwiftShader, WARP); an error when there is none.
    Cpu,
}

impl AdapterChoice {
    /// Parses `auto`, `cpu`, `gpu` or `gpu:N` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "" | "auto" => Ok(AdapterChoice::Auto),
            "cpu" => Ok(AdapterChoice::Cpu),
            "gpu" => Ok(AdapterChoice::Gpu(0)),
            _ => match t.strip_prefix("gpu:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(AdapterChoice::Gpu(n)),
                _ => Err(Error::config(
                    ADAPTER_ENV,
                    format!("`{s}` is not one of auto, cpu, gpu, gpu:N"),
                )),
            },
        }
    }
}

/// The kind of a WGPU adapter, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdapterKind {
    /// A discrete GPU.
    Discrete,
    /// A GPU sharing memory with the CPU.
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// A software rasteriser running on the CPU (lavapipe).
    Cpu,
    /// Anything the driver does not classify.
    Other,
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdapterKind::Discrete => "discrete GPU",
            AdapterKind::Integrated => "integrated GPU",
            AdapterKind::Virtual => "virtual GPU",
            AdapterKind::Cpu => "CPU adapter",
            AdapterKind::Other => "other adapter",
        })
    }
}

/// One adapter the WGPU runtime can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The driver's name for it (`llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Its kind.
    pub kind: AdapterKind,
    /// Its index among adapters of the same kind (what CubeCL's device enum addresses).
    pub index_in_kind: usize,
}

/// The graphics API CubeCL's WGPU runtime uses on this platform.
fn graphics_backend() -> wgpu::Backends {
    if cfg!(target_os = "macos") {
        wgpu::Backends::METAL
    } else {
        wgpu::Backends::VULKAN
    }
}

/// The adapters of the graphics API CubeCL uses here (Vulkan, or Metal on macOS), in the
/// driver's order. Empty when there is no driver at all.
pub fn adapters() -> Vec<AdapterSummary> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: graphics_backend(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let list = cubecl::future::block_on(instance.enumerate_adapters(graphics_backend()));
    let mut counts = [0usize; 5];
    list.iter()
        .map(|a| {
            let info = a.get_info();
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
                wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
                wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
                wgpu::DeviceType::Cpu => AdapterKind::Cpu,
                wgpu::DeviceType::Other => AdapterKind::Other,
            };
            let index_in_kind = counts[kind as usize];
            counts[kind as usize] += 1;
            AdapterSummary {
                name: info.name,
                kind,
                index_in_kind,
            }
        })
        .collect()
}

/// How to build a [`WgpuBackend`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Which adapter to use.
    pub adapter: AdapterChoice,
    /// Print the chosen adapter to stderr.
    pub quiet: bool,
}

impl WgpuOptions {
    /// Options with the adapter from [`ADAPTER_ENV`] (`auto` when unset).
    pub fn from_env() -> Result<Self> {
        let adapter = match std::env::var(ADAPTER_ENV) {
            Ok(v) => AdapterChoice::parse(&v)?,
            Err(_) => AdapterChoice::Auto,
        };
        Ok(WgpuOptions {
            adapter,
            quiet: false,
        })
    }

    /// Options that ask for a CPU adapter.
    pub fn cpu() -> Self {
        WgpuOptions {
            adapter: AdapterChoice::Cpu,
            quiet: false,
        }
    }

    /// Picks the adapter (see [`AdapterChoice`]) without creating a device.
    pub fn pick(&self) -> Result<AdapterSummary> {
        let all = adapters();
        let gpus = || {
            let mut g: Vec<&AdapterSummary> = all
                .iter()
                .filter(|a| {
                    matches!(
                        a.kind,
                        AdapterKind::Discrete | AdapterKind::Integrated | AdapterKind::Virtual
                    )
                })
                .collect();
            g.sort_by_key(|a| a.kind);
            g
        };
        let listing = || {
            if all.is_empty() {
                String::from("no adapter at all (is a Vulkan driver installed? Mesa's software driver is the `mesa-vulkan-drivers` package)")
            } else {
                all.iter()
                    .map(|a| format!("{} ({})", a.name, a.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let found = match self.adapter {
            AdapterChoice::Auto => gpus()
                .first()
                .copied()
                .or_else(|| all.iter().find(|a| a.kind == AdapterKind::Cpu)),
            AdapterChoice::Gpu(n) => gpus().get(n).copied(),
            AdapterChoice::Cpu => all.iter().find(|a| a.kind == AdapterKind::Cpu),
        };
        found.cloned().ok_or_else(|| {
            Error::backend(
                "wgpu",
                format!(
                    "no adapter matches {:?}; available: {}",
                    self.adapter,
                    listing()
                ),
            )
        })
    }

    /// Creates the backend on the chosen adapter.
    pub fn build(&self) -> Result<WgpuBackend> {
        let chosen = self.pick()?;
        let device = match chosen.kind {
            AdapterKind::Discrete => WgpuDevice::DiscreteGpu(chosen.index_in_kind),
            AdapterKind::Integrated => WgpuDevice::IntegratedGpu(chosen.index_in_kind),
            AdapterKind::Virtual => WgpuDevice::VirtualGpu(chosen.index_in_kind),
            AdapterKind::Cpu => WgpuDevice::Cpu,
            AdapterKind::Other => WgpuDevice::DefaultDevice,
        };
        // CubeCL panics when device creation fails; turn that into an error.
        let client = std::panic::catch_unwind(|| WgpuRuntime::client(&device)).map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| String::from("device creation panicked"));
            Error::backend(
                "wgpu",
                format!("creating a device on {} failed: {msg}", chosen.name),
            )
        })?;
        let name = format!("wgpu: {} ({})", chosen.name, chosen.kind);
        if !self.quiet {
            eprintln!("rae: using {name}");
        }
        // Larger buffers cannot be bound on this device; refuse them with an error.
        let max_bind = client.properties().memory.max_page_size;
        Ok(CubeBackend::new(client, name).with_max_alloc(max_bind))
    }
}

/// A backend on the adapter chosen by [`ADAPTER_ENV`] (the first GPU by default).
pub fn create() -> Result<WgpuBackend> {
    WgpuOptions::from_env()?.build()
}

/// Every kernel variant of `rae-kernels` translated to WGSL by CubeCL's WGPU compiler:
/// `(variant, source or error)`. Needs no adapter.
pub fn lower_kernels() -> Vec<(String, std::result::Result<String, String>)> {
    rae_kernels::lowering::lower_all::<WgpuRuntime>(|| {
        cubecl::wgpu::AutoCompiler::Wgsl(cubecl::wgpu::WgslCompiler::default())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_adapter_choices() {
        assert_eq!(AdapterChoice::parse("auto").unwrap(), AdapterChoice::Auto);
        assert_eq!(AdapterChoice::parse("CPU").unwrap(), AdapterChoice::Cpu);
        assert_eq!(AdapterChoice::parse("gpu").unwrap(), AdapterChoice::Gpu(0));
        assert_eq!(
            AdapterChoice::parse("gpu:3").unwrap(),
            AdapterChoice::Gpu(3)
        );
        let e = AdapterChoice::parse("tpu").unwrap_err();
        assert!(e.to_string().contains("tpu"), "{e}");
    }
}
