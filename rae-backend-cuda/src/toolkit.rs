//! The parts of a CUDA toolkit that kernel compilation needs at run time, found the way
//! CubeCL's CUDA runtime finds them, and NVRTC driven directly so the kernels can be
//! compiled on a machine without a GPU.
//!
//! CubeCL compiles each kernel with NVRTC when it is first launched and passes
//! `--include-path=<toolkit>/include` (and `<toolkit>/include/cccl` when present). It finds
//! the toolkit through `CUDA_PATH`, then `/usr/local/cuda`, `/opt/cuda`, and `/usr` when
//! `/usr/bin/nvcc` exists, and **panics** when none exists. [`include_dirs`] makes the same
//! search and returns an error naming `CUDA_PATH` instead.
//!
//! A full toolkit is not needed: the `nvidia-cuda-nvrtc`, `nvidia-cuda-runtime` and
//! `nvidia-cuda-cccl` wheels from PyPI, installed with `pip install --target DIR`, hold
//! NVRTC (`DIR/nvidia/cu13/lib`) and the headers (`DIR/nvidia/cu13/include`); set
//! `CUDA_PATH=DIR/nvidia/cu13` and put its `lib` on `LD_LIBRARY_PATH`.

use std::ffi::{CStr, CString, OsStr};
use std::path::{Path, PathBuf};

use rae_core::{Error, Result};

/// The include folders CubeCL will pass to NVRTC: the toolkit's `include` and, when it
/// exists, `include/cccl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeDirs {
    /// `<toolkit>/include`, holding `cuda_runtime.h` and `cuda_fp16.h`.
    pub include: PathBuf,
    /// `<toolkit>/include/cccl` (libcu++), when present.
    pub cccl: Option<PathBuf>,
}

impl IncludeDirs {
    /// NVRTC options naming these folders.
    pub fn options(&self) -> Vec<String> {
        let mut o = vec![format!("--include-path={}", self.include.display())];
        if let Some(c) = &self.cccl {
            o.push(format!("--include-path={}", c.display()));
        }
        o
    }
}

/// The toolkit root CubeCL would use: `cuda_path` (the value of `CUDA_PATH`) when set, else
/// the first of the default locations that exists.
fn toolkit_root(cuda_path: Option<&OsStr>) -> Option<PathBuf> {
    if let Some(p) = cuda_path {
        return Some(PathBuf::from(p));
    }
    if Path::new("/usr/local/cuda").exists() {
        Some(PathBuf::from("/usr/local/cuda"))
    } else if Path::new("/opt/cuda").exists() {
        Some(PathBuf::from("/opt/cuda"))
    } else if Path::new("/usr/bin/nvcc").exists() {
        Some(PathBuf::from("/usr"))
    } else {
        None
    }
}

/// [`include_dirs`] with the value of `CUDA_PATH` given (for tests that must not touch the
/// process environment).
pub fn include_dirs_from(cuda_path: Option<&OsStr>) -> Result<IncludeDirs> {
    let hint = "set CUDA_PATH to a CUDA toolkit (or to the `nvidia/cu13` folder of the \
                nvidia-cuda-runtime and nvidia-cuda-cccl pip packages)";
    let root = toolkit_root(cuda_path).ok_or_else(|| {
        Error::backend(
            "cuda",
            format!(
                "no CUDA toolkit headers: CUDA_PATH is not set and none of /usr/local/cuda, \
                 /opt/cuda, /usr/bin/nvcc exists; {hint}"
            ),
        )
    })?;
    let include = root.join("include");
    if !include.join("cuda_runtime.h").is_file() {
        let from = if cuda_path.is_some() {
            "CUDA_PATH"
        } else {
            "the default toolkit location"
        };
        return Err(Error::backend(
            "cuda",
            format!(
                "no CUDA toolkit headers: {} (from {from}) has no cuda_runtime.h; {hint}",
                include.display()
            ),
        ));
    }
    let cccl = include.join("cccl");
    let cccl = cccl.is_dir().then_some(cccl);
    Ok(IncludeDirs { include, cccl })
}

/// The toolkit include folders for NVRTC, found as CubeCL finds them (`CUDA_PATH`, then the
/// default locations); an error naming `CUDA_PATH` when there are none.
pub fn include_dirs() -> Result<IncludeDirs> {
    include_dirs_from(std::env::var_os("CUDA_PATH").as_deref())
}

/// Whether NVRTC (`libnvrtc`) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to load the shared library; no NVRTC function is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The `--gpu-architecture` option CubeCL uses for compute capability `sm` (e.g. 80, 90):
/// the architecture-specific `sm_XXa` target from 9.0 on.
pub fn arch_option(sm: u32) -> String {
    if sm >= 90 {
        format!("--gpu-architecture=sm_{sm}a")
    } else {
        format!("--gpu-architecture=sm_{sm}")
    }
}

/// Compiles CUDA C++ `source` to PTX with NVRTC for compute capability `sm`, with the
/// options CubeCL uses (architecture, toolkit include folders, `-lineinfo`). `Ok(ptx)`, or
/// `Err(log)` with NVRTC's log when the source does not compile. Callers check
/// [`nvrtc_present`] first (cudarc panics when the library is missing).
pub fn compile_ptx(
    source: &str,
    sm: u32,
    includes: &IncludeDirs,
) -> std::result::Result<String, String> {
    let src = CString::new(source).map_err(|_| String::from("source contains a NUL byte"))?;
    let mut options = vec![arch_option(sm)];
    options.extend(includes.options());
    options.push("-lineinfo".into());
    let program = cudarc::nvrtc::result::create_program(&src, None)
        .map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    // SAFETY: `program` was created above and is destroyed once, at the end; `src` outlives it.
    unsafe {
        let compiled = cudarc::nvrtc::result::compile_program(program, &options);
        let result = match compiled {
            Ok(()) => cudarc::nvrtc::result::get_ptx(program)
                .map(|p| c_chars_to_string(&p))
                .map_err(|e| format!("nvrtcGetPTX: {e:?}")),
            Err(e) => Err(match cudarc::nvrtc::result::get_program_log(program) {
                Ok(log) => c_chars_to_string(&log),
                Err(_) => format!("{e:?} (no log)"),
            }),
        };
        let _ = cudarc::nvrtc::result::destroy_program(program);
        result
    }
}

fn c_chars_to_string(chars: &[core::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Every kernel variant of `rae-kernels`, lowered to CUDA C++ and compiled to PTX by NVRTC
/// for compute capability `sm`: `(variant, Ok(ptx) or Err(log))`. Needs NVRTC and the
/// toolkit headers, no GPU and no driver.
pub fn compile_all_kernels(sm: u32) -> Result<Vec<(String, std::result::Result<String, String>)>> {
    if !nvrtc_present() {
        return Err(Error::backend(
            "cuda",
            "NVRTC (libnvrtc) could not be loaded; install the CUDA toolkit or the \
             nvidia-cuda-nvrtc pip package and put its lib folder on LD_LIBRARY_PATH",
        ));
    }
    let includes = include_dirs()?;
    Ok(crate::lower_kernels()
        .into_iter()
        .map(|(name, lowered)| {
            let compiled = lowered.and_then(|src| compile_ptx(&src, sm, &includes));
            (name, compiled)
        })
        .collect())
}
