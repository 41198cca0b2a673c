//! numpy's `.npy` arrays and `.npz` archives of them (`np.save`, `np.savez`,
//! `np.savez_compressed`): ADM's reference batches (`arr_0` uint8 images `[N, H, W, 3]` and
//! the `mu`, `sigma`, `mu_s`, `sigma_s` statistics, §6.1) and sample batches.
//!
//! `.npy`: the magic `\x93NUMPY`, a version byte pair (1.0: 2-byte header length; 2.0 and
//! 3.0: 4-byte, 3.0 with a UTF-8 header), then a Python dict literal with `descr`,
//! `fortran_order` and `shape`, then the raw elements. Element types `f4 f8 u1 i8 i4` are
//! read in either byte order (big-endian is converted); anything else is an error naming
//! the dtype. Fortran-ordered arrays are transposed to C order on conversion. Every size is
//! checked (shape product against the bytes present) before anything is allocated.
//!
//! `.npz`: a zip archive of `NAME.npy` entries, stored or DEFLATE-compressed, read through
//! [`crate::pt::zip`]. The file is memory-mapped; stored entries are not copied.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::errors::{io_error, CliError, CliResult};
use crate::pt::zip::Archive;

/// Largest entry inflated into memory (a 50 000-image 256² batch is 9.8 GB).
pub const MAX_NPZ_ENTRY_BYTES: u64 = 1 << 36;
/// Largest `.npy` header (numpy itself caps headers at 10 000 bytes by default).
pub const MAX_NPY_HEADER: usize = 1 << 20;
/// Most dimensions of an array.
pub const MAX_NPY_DIMS: usize = 32;

/// The element types read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `f4`.
    F32,
    /// `f8`.
    F64,
    /// `u1`.
    U8,
    /// `i4`.
    I32,
    /// `i8`.
    I64,
}

impl NpyDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::U8 => 1,
            NpyDtype::F32 | NpyDtype::I32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
        }
    }
}

/// One array: its type, shape and raw bytes (borrowed from a memory map or owned).
#[derive(Debug, Clone)]
pub struct NpyArray<'a> {
    /// Element type.
    pub dtype: NpyDtype,
    /// Whether the elements are big-endian in `data`.
    pub big_endian: bool,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Column-major (`fortran_order: True`) element order.
    pub fortran: bool,
    /// `numel × size` bytes.
    pub data: Cow<'a, [u8]>,
}

fn bad(what: &str, why: impl std::fmt::Display) -> CliError {
    CliError::new(format!("{what}: {why}"))
}

/// Parses one `.npy` image held in `bytes`; `what` names it in errors.
pub fn parse_npy<'a>(bytes: Cow<'a, [u8]>, what: &str) -> CliResult<NpyArray<'a>> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(what, "not a .npy array (bad magic)"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(bad(
                what,
                format!(".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"),
            ))
        }
    };
    if hlen > MAX_NPY_HEADER {
        return Err(bad(
            what,
            format!("header of {hlen} bytes is over the limit"),
        ));
    }
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad(what, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(what, "header is not text"))?;
    let (descr, fortran, shape) = parse_header(header).map_err(|e| bad(what, e))?;
    let (dtype, big_endian) = parse_descr(&descr).map_err(|e| bad(what, e))?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| bad(what, format!("shape {shape:?} overflows")))?;
    let body = start + hlen;
    let have = bytes.len() - body;
    if have != numel {
        return Err(bad(
            what,
            format!(
                "shape {shape:?} of {descr} needs {numel} data bytes, the array holds {have} (truncated?)"
            ),
        ));
    }
    let data = match bytes {
        Cow::Borrowed(b) => Cow::Borrowed(&b[body..]),
        Cow::Owned(mut v) => {
            v.drain(..body);
            Cow::Owned(v)
        }
    };
    Ok(NpyArray {
        dtype,
        big_endian,
        shape,
        fortran,
        data,
    })
}

fn parse_descr(d: &str) -> Result<(NpyDtype, bool), String> {
    let (order, code) = match d.as_bytes().first() {
        Some(b'<' | b'|' | b'=') => (false, &d[1..]),
        Some(b'>') => (true, &d[1..]),
        _ => (false, d),
    };
    let t = match code {
        "f4" => NpyDtype::F32,
        "f8" => NpyDtype::F64,
        "u1" => NpyDtype::U8,
        "i4" => NpyDtype::I32,
        "i8" => NpyDtype::I64,
        _ => {
            return Err(format!(
                "unsupported dtype '{d}' (supported: f4, f8, u1, i4, i8 in either byte order)"
            ))
        }
    };
    Ok((t, order && t != NpyDtype::U8))
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` → its three values.
fn parse_header(h: &str) -> Result<(String, bool, Vec<usize>), String> {
    let h = h.trim();
    let inner = h
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or("header is not a Python dict")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let q = rest.chars().next().ok_or("empty key")?;
        if q != '\'' && q != '"' {
            return Err(format!("bad header near {rest:.20}"));
        }
        let end = rest[1..].find(q).ok_or("unterminated key")? + 1;
        let key = &rest[1..end];
        rest = rest[end + 1..]
            .trim_start()
            .strip_prefix(':')
            .ok_or("missing ':' in header")?
            .trim_start();
        match key {
            "descr" => {
                let q = rest.chars().next().ok_or("missing descr")?;
                if q != '\'' && q != '"' {
                    return Err(
                        "descr is not a simple type string (structured dtypes are not supported)"
                            .into(),
                    );
                }
                let e = rest[1..].find(q).ok_or("unterminated descr")? + 1;
                descr = Some(rest[1..e].to_string());
                rest = &rest[e + 1..];
            }
            "fortran_order" => {
                if let Some(r) = rest.strip_prefix("True") {
                    fortran = Some(true);
                    rest = r;
                } else if let Some(r) = rest.strip_prefix("False") {
                    fortran = Some(false);
                    rest = r;
                } else {
                    return Err("fortran_order is neither True nor False".into());
                }
            }
            "shape" => {
                let r = rest.strip_prefix('(').ok_or("shape is not a tuple")?;
                let e = r.find(')').ok_or("unterminated shape")?;
                let mut dims = Vec::new();
                for p in r[..e].split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let p = p.trim_end_matches('L');
                    dims.push(
                        p.parse::<usize>()
                            .map_err(|_| format!("bad dimension {p}"))?,
                    );
                    if dims.len() > MAX_NPY_DIMS {
                        return Err(format!("more than {MAX_NPY_DIMS} dimensions"));
                    }
                }
                shape = Some(dims);
                rest = &r[e + 1..];
            }
            k => return Err(format!("unknown header key '{k}'")),
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok((
        descr.ok_or("header lacks descr")?,
        fortran.ok_or("header lacks fortran_order")?,
        shape.ok_or("header lacks shape")?,
    ))
}

impl NpyArray<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element `k` in storage order, as f64.
    fn get(&self, k: usize) -> f64 {
        let s = self.dtype.size();
        let mut b = [0u8; 8];
        b[..s].copy_from_slice(&self.data[k * s..(k + 1) * s]);
        if self.big_endian {
            b[..s].reverse();
        }
        match self.dtype {
            NpyDtype::U8 => b[0] as f64,
            NpyDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            NpyDtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            NpyDtype::F64 => f64::from_le_bytes(b),
            NpyDtype::I64 => i64::from_le_bytes(b) as f64,
        }
    }

    /// Storage index of each element in C (row-major) order.
    fn c_order(&self) -> Vec<usize> {
        let n = self.numel();
        if !self.fortran || self.shape.len() < 2 {
            return (0..n).collect();
        }
        // Fortran strides: the first index moves fastest.
        let mut strides = vec![1usize; self.shape.len()];
        for i in 1..self.shape.len() {
            strides[i] = strides[i - 1] * self.shape[i - 1];
        }
        let mut idx = vec![0usize; self.shape.len()];
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }

    /// The values in C order as f64 (i64 beyond 2⁵³ rounds).
    pub fn to_f64(&self) -> Vec<f64> {
        self.c_order().into_iter().map(|k| self.get(k)).collect()
    }

    /// The values in C order as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.c_order()
            .into_iter()
            .map(|k| self.get(k) as f32)
            .collect()
    }

    /// The bytes of a uint8 array in C order; an error naming `what` for any other dtype.
    pub fn to_u8(&self, what: &str) -> CliResult<Cow<'_, [u8]>> {
        if self.dtype != NpyDtype::U8 {
            return Err(bad(
                what,
                format!("expected uint8 images, found {:?}", self.dtype),
            ));
        }
        if !self.fortran || self.shape.len() < 2 {
            return Ok(Cow::Borrowed(&self.data));
        }
        Ok(Cow::Owned(
            self.c_order().into_iter().map(|k| self.data[k]).collect(),
        ))
    }
}

/// An `.npz` file, memory-mapped, with its zip directory parsed on each access.
#[derive(Debug)]
pub struct Npz {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Npz {
    /// Opens and memory-maps `path`, checking that it is a zip archive.
    pub fn open(path: &Path) -> CliResult<Npz> {
        let f = std::fs::File::open(path).map_err(|e| io_error("cannot open", path, &e))?;
        // SAFETY: the map is only read; a file truncated under us would fault, as with any
        // memory-mapped reader (the latent cache maps its shards the same way).
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| io_error("cannot memory-map", path, &e))?;
        let npz = Npz {
            path: path.to_path_buf(),
            map,
        };
        npz.archive()?;
        Ok(npz)
    }

    fn archive(&self) -> CliResult<Archive<'_>> {
        Archive::parse(&self.map).map_err(|e| bad(&self.path.display().to_string(), e))
    }

    /// The array names (entry names without `.npy`), in archive order.
    pub fn names(&self) -> CliResult<Vec<String>> {
        Ok(self
            .archive()?
            .names()
            .iter()
            .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
            .collect())
    }

    /// Array `name` (`arr_0`, `mu`, ...); `Ok(None)` when absent.
    pub fn get(&self, name: &str) -> CliResult<Option<NpyArray<'_>>> {
        let what = format!("{} ({name})", self.path.display());
        let data = self
            .archive()?
            .read_any(&format!("{name}.npy"), MAX_NPZ_ENTRY_BYTES)
            .map_err(|e| bad(&what, e))?;
        data.map(|d| parse_npy(d, &what)).transpose()
    }

    /// Array `name`, or an error naming the file and the arrays it holds.
    pub fn require(&self, name: &str) -> CliResult<NpyArray<'_>> {
        self.get(name)?.ok_or_else(|| {
            CliError::new(format!(
                "{} has no array '{name}' (it holds: {})",
                self.path.display(),
                self.names().unwrap_or_default().join(", ")
            ))
        })
    }
}
