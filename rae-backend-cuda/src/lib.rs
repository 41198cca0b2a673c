//! # rae-backend-cuda
//!
//! [`CudaBackend`]: the kernels of `rae-kernels` compiled for NVIDIA GPUs through CubeCL's
//! CUDA runtime. Construction probes for the CUDA driver first and returns an error, never
//! a panic, on machines without one: CubeCL and cudarc panic when `libcuda` is missing, so
//! [`probe`] checks that the driver library loads, initialises it and counts the devices
//! before any CubeCL call. The crate builds without the CUDA toolkit (the driver and NVRTC
//! are loaded at run time). [`NcclGroup`] (module [`nccl`]) reduces gradients between
//! processes with NCCL, loaded at run time too.

#![warn(missing_docs)]

use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::Runtime;
use rae_core::{Error, Result};
use rae_kernels::CubeBackend;

pub mod nccl;
mod toolkit;
pub use nccl::{nccl_find, nccl_probe, nccl_unique_id, nccl_version, NcclGroup, NCCL_LIB_ENV};
pub use toolkit::{
    arch_option, compile_all_kernels, compile_ptx, include_dirs, include_dirs_from, nvrtc_present,
    IncludeDirs,
};

/// The rae backend on an NVIDIA GPU: [`CubeBackend`] on CubeCL's CUDA runtime.
pub type CudaBackend = CubeBackend<CudaRuntime>;

fn no_driver(reason: impl Into<String>) -> Error {
    Error::backend("cuda", reason)
}

/// The CUDA devices present: `Ok(count)` (at least 1) when the driver loads and reports a
/// device and the toolkit headers that kernel compilation needs are found (see
/// [`include_dirs`]); an error saying what is missing otherwise. Never panics.
pub fn probe() -> Result<usize> {
    // SAFETY: only tries to load the shared library; no CUDA function is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(no_driver(
            "no CUDA driver: libcuda could not be loaded (is an NVIDIA driver installed?)",
        ));
    }
    cudarc::driver::result::init()
        .map_err(|e| no_driver(format!("the CUDA driver failed to initialise: {e:?}")))?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| no_driver(format!("counting CUDA devices failed: {e:?}")))?;
    if count <= 0 {
        return Err(no_driver("the CUDA driver reports no device"));
    }
    // CubeCL panics at the first kernel compilation without the headers.
    include_dirs()?;
    Ok(count as usize)
}

/// The name of device `index` as the driver reports it.
fn device_name(index: usize) -> String {
    let name = i32::try_from(index)
        .ok()
        .and_then(|i| cudarc::driver::result::device::get(i).ok())
        .and_then(|d| cudarc::driver::result::device::get_name(d).ok());
    name.unwrap_or_else(|| format!("device {index}"))
}

/// A backend on CUDA device `index`; an error (not a panic) when there is no driver, no
/// NVRTC, or no such device.
pub fn create(index: usize) -> Result<CudaBackend> {
    let count = probe()?;
    if index >= count {
        return Err(Error::invalid(
            "cuda device",
            format!("device {index} requested, the driver reports {count}"),
        ));
    }
    // NVRTC compiles the kernels at run time; CubeCL panics without it. (The probe for
    // it only loads the library.)
    if !nvrtc_present() {
        return Err(no_driver(
            "NVRTC (libnvrtc) could not be loaded; it ships with the CUDA toolkit",
        ));
    }
    let device = CudaDevice::new(index);
    let client = std::panic::catch_unwind(|| CudaRuntime::client(&device))
        .map_err(|_| no_driver(format!("creating a CUDA context on device {index} failed")))?;
    Ok(CubeBackend::new(
        client,
        format!("cuda: {}", device_name(index)),
    ))
}

/// Every kernel variant of `rae-kernels` translated to CUDA C++ by CubeCL's CUDA compiler:
/// `(variant, source or error)`. Needs no GPU and no driver.
pub fn lower_kernels() -> Vec<(String, std::result::Result<String, String>)> {
    rae_kernels::lowering::lower_all::<CudaRuntime>(Default::default)
}
