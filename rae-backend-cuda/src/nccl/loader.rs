//! Finding and loading `libnccl` at run time, with errors instead of panics.
//!
//! cudarc's NCCL bindings load the library by bare name (`libnccl.so`, `libnccl.so.12`, ...)
//! and panic when none loads; the pip wheel and the `libnccl2` package ship only
//! `libnccl.so.2`, which is not among those names. So this module finds the library itself
//! (by path, in the places listed on [`nccl_find`]), loads it with `libloading`, and resolves
//! the handful of entry points the collective uses into a table of function pointers. Every
//! failure is a [`rae_core::Error`] naming where it looked.

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;
use rae_core::{Error, Result};

/// The environment variable naming where NCCL is: the folder holding `libnccl.so.2`, the
/// library file itself, or a `pip install --target` folder (holding `nvidia/nccl/lib`).
/// When it is set, only that place is searched.
pub const NCCL_LIB_ENV: &str = "RAE_NCCL_LIB";

/// File names of the library, most specific first.
const FILE_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

/// Where the `nvidia-nccl-cu12`/`-cu13` wheels put the library, below `site-packages`.
const WHEEL_LIB: &str = "nvidia/nccl/lib";

/// `ncclResult_t`.
pub(crate) type NcclResult = c_int;
/// `ncclComm_t`.
pub(crate) type NcclComm = *mut c_void;
/// `cudaStream_t` (the same handle as the driver's `CUstream`).
pub(crate) type NcclStream = *mut c_void;

/// `ncclUniqueId`: 128 opaque bytes, passed by value to `ncclCommInitRank`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UniqueId {
    pub(crate) internal: [u8; 128],
}

/// `ncclDataType_t` values (stable since NCCL 2.0).
pub(crate) const NCCL_FLOAT32: c_int = 7;
/// `ncclFloat64`.
pub(crate) const NCCL_FLOAT64: c_int = 8;
/// `ncclRedOp_t::ncclSum`.
pub(crate) const NCCL_SUM: c_int = 0;

/// The NCCL entry points in use, resolved from one loaded library. The library is kept
/// alive with the pointers (the table lives in a static for the rest of the process).
pub(crate) struct Nccl {
    _lib: Library,
    /// Where the library was loaded from.
    pub(crate) path: PathBuf,
    pub(crate) get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    pub(crate) get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    pub(crate) comm_init_rank:
        unsafe extern "C" fn(*mut NcclComm, c_int, UniqueId, c_int) -> NcclResult,
    pub(crate) comm_destroy: unsafe extern "C" fn(NcclComm) -> NcclResult,
    pub(crate) comm_get_async_error: unsafe extern "C" fn(NcclComm, *mut NcclResult) -> NcclResult,
    pub(crate) all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        NcclComm,
        NcclStream,
    ) -> NcclResult,
    pub(crate) broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        NcclComm,
        NcclStream,
    ) -> NcclResult,
    pub(crate) group_start: unsafe extern "C" fn() -> NcclResult,
    pub(crate) group_end: unsafe extern "C" fn() -> NcclResult,
    get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    /// `ncclGetLastError` (NCCL ≥ 2.13); absent in older libraries.
    get_last_error: Option<unsafe extern "C" fn(NcclComm) -> *const c_char>,
}

impl Nccl {
    /// Loads the library at `path` and resolves every entry point.
    pub(crate) fn load(path: &Path) -> Result<Nccl> {
        let shown = path.display();
        // SAFETY: loading NCCL runs its initialisers, which only set up internal state; the
        // library is a C library with no Rust-side invariants.
        let lib = unsafe { Library::new(path) }
            .map_err(|e| nccl_err(format!("loading {shown} failed: {e}")))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the type written at each field is the C prototype of the symbol
                // in nccl.h (stable across NCCL 2.x); the pointer stays valid while `lib`
                // lives, and `lib` is moved into the same struct.
                *unsafe { lib.get($name) }.map_err(|e| {
                    nccl_err(format!(
                        "{shown} has no {} (not NCCL 2.x?): {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    ))
                })?
            };
        }
        let get_version = sym!(b"ncclGetVersion\0");
        let get_unique_id = sym!(b"ncclGetUniqueId\0");
        let comm_init_rank = sym!(b"ncclCommInitRank\0");
        let comm_destroy = sym!(b"ncclCommDestroy\0");
        let comm_get_async_error = sym!(b"ncclCommGetAsyncError\0");
        let all_reduce = sym!(b"ncclAllReduce\0");
        let broadcast = sym!(b"ncclBroadcast\0");
        let group_start = sym!(b"ncclGroupStart\0");
        let group_end = sym!(b"ncclGroupEnd\0");
        let get_error_string = sym!(b"ncclGetErrorString\0");
        // SAFETY: as above; this one is optional.
        let get_last_error = unsafe { lib.get(b"ncclGetLastError\0") }.ok().map(|s| *s);
        Ok(Nccl {
            _lib: lib,
            path: path.to_path_buf(),
            get_version,
            get_unique_id,
            comm_init_rank,
            comm_destroy,
            comm_get_async_error,
            all_reduce,
            broadcast,
            group_start,
            group_end,
            get_error_string,
            get_last_error,
        })
    }

    /// `Ok` for `ncclSuccess`, else an error naming `what`, NCCL's description of the code
    /// and, when `comm` is given and the library has it, NCCL's last error message.
    pub(crate) fn check(&self, code: NcclResult, what: &str, comm: Option<NcclComm>) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe { c_str((self.get_error_string)(code)) };
        let mut msg = format!("{what} failed: {text} (ncclResult {code})");
        if let (Some(last), Some(comm)) = (self.get_last_error, comm) {
            // SAFETY: `comm` is a live communicator; the result is NUL-terminated or null.
            let detail = unsafe { c_str(last(comm)) };
            if !detail.is_empty() {
                msg.push_str(": ");
                msg.push_str(&detail);
            }
        }
        Err(nccl_err(msg))
    }

    /// The library's version `(major, minor, patch)`.
    pub(crate) fn version(&self) -> Result<(u32, u32, u32)> {
        let mut v: c_int = 0;
        // SAFETY: writes one int.
        self.check(
            unsafe { (self.get_version)(&mut v) },
            "ncclGetVersion",
            None,
        )?;
        Ok(decode_version(v.max(0) as u32))
    }
}

/// `NCCL_VERSION_CODE` as `(major, minor, patch)`: `major·10000 + minor·100 + patch` from
/// NCCL 2.9 on, `major·1000 + minor·100 + patch` before.
fn decode_version(v: u32) -> (u32, u32, u32) {
    if v >= 10000 {
        (v / 10000, v / 100 % 100, v % 100)
    } else {
        (v / 1000, v / 100 % 10, v % 100)
    }
}

/// A C string, or "" for null.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An error of the NCCL collective.
pub(crate) fn nccl_err(reason: impl Into<String>) -> Error {
    Error::backend("nccl", reason)
}

/// The process's NCCL, loaded once (where [`nccl_find`] finds it); the error of the first
/// attempt otherwise (the environment is read once).
pub(crate) fn nccl() -> Result<&'static Nccl> {
    static NCCL: OnceLock<Result<Nccl>> = OnceLock::new();
    NCCL.get_or_init(|| {
        let path = nccl_find(std::env::var_os(NCCL_LIB_ENV).as_deref())?;
        Nccl::load(&path)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The folders (and, for an override naming a file, that file) searched for the library.
fn search_places(dir: Option<&OsStr>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(d) = dir {
        let d = PathBuf::from(d);
        push(d.join(WHEEL_LIB));
        push(d.join("lib64"));
        push(d.join("lib"));
        push(d);
        return out;
    }
    let paths = |var: &str| -> Vec<PathBuf> {
        std::env::var_os(var)
            .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    };
    for p in paths("LD_LIBRARY_PATH") {
        push(p);
    }
    for p in paths("PYTHONPATH") {
        push(p.join(WHEEL_LIB));
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(v) = std::env::var_os(var) {
            let root = PathBuf::from(v);
            push(root.join("lib64"));
            push(root.join("lib"));
            // The pip layout: CUDA_PATH = <site-packages>/nvidia/cu13, NCCL beside it.
            if let Some(nvidia) = root.parent() {
                push(nvidia.join("nccl/lib"));
            }
        }
    }
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Some(home) = &home {
        prefixes.push(home.join(".local"));
    }
    // pyenv's interpreters: <PYENV_ROOT or ~/.pyenv>/versions/*.
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".pyenv")));
    if let Some(Ok(versions)) = pyenv.map(|p| std::fs::read_dir(p.join("versions"))) {
        let mut v: Vec<PathBuf> = versions.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        v.sort();
        prefixes.extend(v);
    }
    prefixes.extend(["/usr/local", "/usr"].map(PathBuf::from));
    for prefix in prefixes {
        for site in site_packages(&prefix) {
            push(site.join(WHEEL_LIB));
        }
    }
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/local/nccl/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        push(PathBuf::from(d));
    }
    out
}

/// `<prefix>/lib/python3*/{site,dist}-packages` and `<prefix>/lib/python3/dist-packages`.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let lib = prefix.join("lib");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return out;
    };
    let mut pythons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    for py in pythons {
        for sub in ["site-packages", "dist-packages"] {
            let p = py.join(sub);
            if p.is_dir() {
                out.push(p);
            }
        }
    }
    out
}

/// Where NCCL would be loaded from. With `dir` (the value of [`NCCL_LIB_ENV`]) only that
/// place is searched: the file it names, or `libnccl.so.2` / `libnccl.so` in it, its `lib`
/// or `lib64`, or its `nvidia/nccl/lib` (a `pip install --target` folder). Without it: the
/// folders on `LD_LIBRARY_PATH`, `nvidia/nccl/lib` below each folder on `PYTHONPATH`,
/// `CUDA_PATH` and `CUDA_HOME` (`lib64`, `lib`, and the pip layout's `../nccl/lib`), the
/// `site-packages` of `VIRTUAL_ENV`, `CONDA_PREFIX`, `~/.local`, pyenv's versions,
/// `/usr/local` and `/usr` (the `nvidia-nccl-cu12`/`-cu13` wheels), the usual system
/// folders, and last the system loader's own search (`ld.so.cache`), which is checked by
/// loading the library and reported as the bare file name. Never panics: an error lists every place searched and
/// suggests `--dist mpi`.
pub fn nccl_find(dir: Option<&OsStr>) -> Result<PathBuf> {
    if let Some(d) = dir {
        let p = Path::new(d);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
    }
    let places = search_places(dir);
    for place in &places {
        for name in FILE_NAMES {
            let f = place.join(name);
            if f.is_file() {
                return Ok(f);
            }
        }
    }
    if dir.is_none() {
        for name in FILE_NAMES {
            // SAFETY: as in `Nccl::load`; the library is unloaded again at once.
            if unsafe { Library::new(name) }.is_ok() {
                return Ok(PathBuf::from(name));
            }
        }
    }
    let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    let from = match dir {
        Some(d) => format!("{NCCL_LIB_ENV}={}", Path::new(d).display()),
        None => format!("the default places and the system loader ({NCCL_LIB_ENV} is not set)"),
    };
    Err(nccl_err(format!(
        "NCCL was not found: no libnccl.so.2 or libnccl.so in {from}; searched {}. Install \
         NCCL (for example `pip install --target DIR nvidia-nccl-cu13`, then set \
         {NCCL_LIB_ENV}=DIR), or run with `--dist mpi` to reduce through host memory with MPI \
         instead",
        looked.join(", ")
    )))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_library_is_a_clean_error() {
        let dir = std::env::temp_dir().join(format!("rae-nccl-fake-{}", std::process::id()));
        let lib = dir.join(WHEEL_LIB);
        std::fs::create_dir_all(&lib).expect("temp dir");
        std::fs::write(lib.join("libnccl.so.2"), b"not an ELF file").expect("write");
        let found = nccl_find(Some(dir.as_os_str())).expect("the wheel layout is searched");
        assert_eq!(found, lib.join("libnccl.so.2"));
        let err = Nccl::load(&found)
            .err()
            .expect("a fake library does not load");
        assert!(err.to_string().contains("loading"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_decode() {
        assert_eq!(decode_version(23203), (2, 32, 3));
        assert_eq!(decode_version(2804), (2, 8, 4));
    }
}
