//! Reading PyTorch `.pt` checkpoints (`torch.save` zip files) without Python.
//!
//! The released RAE artefacts are PyTorch files: the decoder `model.pt` (a raw state dict,
//! §2.6.4), the stage-2 `stage2_model.pt` (a state dict or `{'ema': sd, ...}`, §3.8) and the
//! latent statistics `stat.pt` (`{'mean': T, 'var': T}`, §2.4). This module reads them with
//! its own minimal ZIP reader (entries must be stored, uncompressed, as torch writes them;
//! ZIP64 archives are read) and a pickle machine that knows only what a state dict needs.
//!
//! Safety: unpickling never executes or imports anything. The only globals a file may name
//! are `collections.OrderedDict`, `torch._utils._rebuild_tensor[_v2]`,
//! `torch._utils._rebuild_parameter[_with_state]` and the `torch.<X>Storage` classes used in
//! storage persistent ids; any other global (`os.system`, `builtins.eval`, a user class,
//! `argparse.Namespace`, numpy scalars) makes the whole file an error that names it. Malformed
//! input (truncation, bad offsets, CRC mismatch, stack underflow, memo misses, views
//! reaching past their storage, nesting deeper than [`MAX_DEPTH`], or a file whose shared
//! references would expand past [`element_budget`]) is an error too, never a panic.
//!
//! Conversions: tuples become [`PtValue::List`]; integer dict keys become their decimal
//! string (optimizer states key parameters by index); other key types are refused. A
//! repeated key keeps the last value, as Python does. Tensors are copied into contiguous
//! row-major buffers, whatever their storage offset and strides; floating types become f32
//! (f16 and bf16 exactly, f64 rounded), integer and bool types become i64.

mod pickle;
mod zip;

use std::collections::HashMap;
use std::path::Path;

use rae_core::Error;

use pickle::{Id, Node, StorageRef, TensorRef};

/// Deepest nesting of dicts and lists accepted (a state dict needs 2 or 3 levels).
pub const MAX_DEPTH: usize = 64;

/// Element type of a tensor in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtDtype {
    /// float32 (`torch.FloatStorage`).
    F32,
    /// float16 (`torch.HalfStorage`).
    F16,
    /// bfloat16 (`torch.BFloat16Storage`).
    BF16,
    /// float64 (`torch.DoubleStorage`), read as f32 (rounded).
    F64,
    /// int64 (`torch.LongStorage`).
    I64,
    /// int32 (`torch.IntStorage`).
    I32,
    /// int16 (`torch.ShortStorage`).
    I16,
    /// int8 (`torch.CharStorage`).
    I8,
    /// uint8 (`torch.ByteStorage`).
    U8,
    /// bool (`torch.BoolStorage`), read as 0 / 1.
    Bool,
}

impl PtDtype {
    /// Bytes per element in the file.
    pub fn size(self) -> usize {
        match self {
            PtDtype::F64 | PtDtype::I64 => 8,
            PtDtype::F32 | PtDtype::I32 => 4,
            PtDtype::F16 | PtDtype::BF16 | PtDtype::I16 => 2,
            PtDtype::I8 | PtDtype::U8 | PtDtype::Bool => 1,
        }
    }

    /// Whether the values are read as f32 ([`PtData::F32`]) rather than i64.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            PtDtype::F32 | PtDtype::F16 | PtDtype::BF16 | PtDtype::F64
        )
    }

    /// PyTorch's name (`float32`, `bfloat16`, `int64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PtDtype::F32 => "float32",
            PtDtype::F16 => "float16",
            PtDtype::BF16 => "bfloat16",
            PtDtype::F64 => "float64",
            PtDtype::I64 => "int64",
            PtDtype::I32 => "int32",
            PtDtype::I16 => "int16",
            PtDtype::I8 => "int8",
            PtDtype::U8 => "uint8",
            PtDtype::Bool => "bool",
        }
    }
}

/// Tensor values, contiguous and row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum PtData {
    /// Floating tensors, converted to f32.
    F32(Vec<f32>),
    /// Integer and bool tensors, widened to i64.
    I64(Vec<i64>),
}

/// A tensor read from a `.pt` file.
#[derive(Debug, Clone, PartialEq)]
pub struct PtTensor {
    /// The element type in the file (the values are in [`PtTensor::data`]).
    pub dtype: PtDtype,
    /// Sizes, outermost first; empty for a 0-d tensor.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: PtData,
}

impl PtTensor {
    /// Number of elements (1 for a 0-d tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values, when the tensor is floating.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            PtData::F32(v) => Some(v),
            PtData::I64(_) => None,
        }
    }

    /// The values, when the tensor is integer or bool.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            PtData::I64(v) => Some(v),
            PtData::F32(_) => None,
        }
    }
}

/// A value read from a `.pt` file.
#[derive(Debug, Clone, PartialEq)]
pub enum PtValue {
    /// A tensor (or an `nn.Parameter`, which is read as its data).
    Tensor(PtTensor),
    /// A dict or OrderedDict, in insertion order; keys are strings (integer keys converted).
    Dict(Vec<(String, PtValue)>),
    /// A list or tuple.
    List(Vec<PtValue>),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bool.
    Bool(bool),
    /// `None`.
    None,
}

impl PtValue {
    /// The value under `key`, when `self` is a dict that has it.
    pub fn get(&self, key: &str) -> Option<&PtValue> {
        match self {
            PtValue::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The tensor, when `self` is one.
    pub fn as_tensor(&self) -> Option<&PtTensor> {
        match self {
            PtValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The entries, when `self` is a dict.
    pub fn as_dict(&self) -> Option<&[(String, PtValue)]> {
        match self {
            PtValue::Dict(entries) => Some(entries),
            _ => None,
        }
    }
}

/// The keys under which training checkpoints keep a model's state dict, in order of
/// preference: the EMA copy is the one to sample with (§3.8).
pub const STATE_DICT_KEYS: [&str; 3] = ["ema", "model", "state_dict"];

/// Picks the state dict out of a checkpoint: the value under the first of `keys` that
/// holds a dict, or `value` itself when none does (a raw state dict). Use
/// [`STATE_DICT_KEYS`] for the usual `ema` / `model` / `state_dict` layouts.
pub fn select_state_dict<'a>(value: &'a PtValue, keys: &[&str]) -> &'a PtValue {
    keys.iter()
        .filter_map(|k| value.get(k))
        .find(|v| matches!(v, PtValue::Dict(_)))
        .unwrap_or(value)
}

/// Every tensor in `value` with its dotted name, in file order: nested dict keys are
/// joined with `.` (`{"ema": {"x.weight": T}}` gives `ema.x.weight`) and list items are
/// named by their index, as PyTorch names `nn.ModuleList` entries. A bare tensor is named
/// `""`. Non-tensor leaves are skipped.
pub fn flatten_tensors(value: &PtValue) -> Vec<(String, &PtTensor)> {
    fn walk<'a>(v: &'a PtValue, prefix: &str, out: &mut Vec<(String, &'a PtTensor)>) {
        match v {
            PtValue::Tensor(t) => out.push((prefix.to_string(), t)),
            PtValue::Dict(entries) => {
                for (k, v) in entries {
                    walk(v, &join(prefix, k), out);
                }
            }
            PtValue::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &join(prefix, &i.to_string()), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// Like [`flatten_tensors`], but takes the value and moves the tensors out, so a large
/// checkpoint is not held twice.
pub fn into_tensors(value: PtValue) -> Vec<(String, PtTensor)> {
    fn walk(v: PtValue, prefix: &str, out: &mut Vec<(String, PtTensor)>) {
        match v {
            PtValue::Tensor(t) => out.push((prefix.to_string(), t)),
            PtValue::Dict(entries) => {
                for (k, v) in entries {
                    walk(v, &join(prefix, &k), out);
                }
            }
            PtValue::List(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    walk(v, &join(prefix, &i.to_string()), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// Whether `bytes` look like a `torch.save` file: a zip archive, or the legacy (torch < 1.6)
/// format, which [`read_pt`] recognises in order to refuse it with a clear message.
pub fn looks_like_pt(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(&LEGACY_MAGIC)
}

/// The most elements (tensor values plus dict and list items) a file of `file_len` bytes
/// may expand to: eight per byte, plus 64 Ki. A plain checkpoint needs at most one per two
/// bytes (each element is stored once, in 2 bytes or more); the margin covers views that
/// share a storage and dicts referenced twice, while a small file that references one big
/// object over and over (a "billion laughs") is refused instead of exhausting memory.
pub fn element_budget(file_len: usize) -> usize {
    file_len.saturating_mul(8).saturating_add(1 << 16)
}

/// Reads the file at `path` with [`read_pt`], naming it by its path in errors.
pub fn read_pt_file(path: &Path) -> Result<PtValue, Error> {
    let source = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::format(&source, format!("cannot read: {e}")))?;
    read_pt(&bytes, &source)
}

/// The pickle protocol-2 header and magic number that open the legacy (torch < 1.6) format.
const LEGACY_MAGIC: [u8; 12] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8,
];

/// Reads a `torch.save` file held in `bytes`. `source` names it in errors, which are all
/// [`Error::Format`] and name the entry, global or tensor at fault.
pub fn read_pt(bytes: &[u8], source: &str) -> Result<PtValue, Error> {
    let fail = |reason: String| Error::format(source, reason);
    if bytes.starts_with(&LEGACY_MAGIC) || bytes.get(257..262) == Some(b"ustar".as_slice()) {
        return Err(fail(
            "legacy PyTorch serialization format (torch < 1.6) is not supported; re-save the \
             file with a current torch.save"
                .into(),
        ));
    }
    let archive = zip::Archive::parse(bytes).map_err(fail)?;
    let prefix = archive_prefix(&archive).map_err(fail)?;
    let pkl_name = format!("{prefix}data.pkl");
    let pkl = archive
        .read(&pkl_name)
        .map_err(fail)?
        .ok_or_else(|| fail(format!("no {pkl_name}")))?;
    let big_endian = match archive.read(&format!("{prefix}byteorder")).map_err(fail)? {
        None | Some(b"little") => false,
        Some(b"big") => true,
        Some(other) => {
            return Err(fail(format!(
                "{prefix}byteorder says {:?}, not little or big",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let program = pickle::unpickle(pkl).map_err(|e| fail(format!("{pkl_name}: {e}")))?;
    let mut conv = Converter {
        nodes: &program.nodes,
        archive: &archive,
        prefix: &prefix,
        big_endian,
        budget: element_budget(bytes.len()),
        storages: HashMap::new(),
    };
    conv.value(program.root, "", 0).map_err(fail)
}

/// The folder every entry lives in (`archive/`, or the file stem in torch ≥ 1.6), found
/// as the folder of the one top-level `data.pkl`.
fn archive_prefix(archive: &zip::Archive) -> Result<String, String> {
    let mut found = archive.names().iter().filter_map(|n| {
        let prefix = n.strip_suffix("data.pkl")?;
        let folder = prefix.strip_suffix('/')?;
        (!folder.is_empty() && !folder.contains('/')).then(|| prefix.to_string())
    });
    let first = found.next();
    match (first, found.next()) {
        (Some(p), None) => Ok(p),
        (Some(a), Some(b)) => Err(format!(
            "two pickles ({a}data.pkl and {b}data.pkl): not a single torch.save file"
        )),
        (None, _) => {
            let listed: Vec<&str> = archive.names().iter().take(8).map(String::as_str).collect();
            Err(format!(
                "no <folder>/data.pkl entry: not a torch.save file (entries: {})",
                listed.join(", ")
            ))
        }
    }
}

/// Turns the pickle's arena into [`PtValue`]s, reading storages as tensors need them.
struct Converter<'a, 'b> {
    nodes: &'a [Node],
    archive: &'a zip::Archive<'b>,
    prefix: &'a str,
    big_endian: bool,
    /// Elements and items still allowed (see [`element_budget`]).
    budget: usize,
    /// Storage bytes already located and CRC-checked, by key.
    storages: HashMap<String, &'b [u8]>,
}

impl<'b> Converter<'_, 'b> {
    fn spend(&mut self, n: usize, path: &str) -> Result<(), String> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            format!(
                "at {}: the file expands to more values than its size allows (shared \
                 references repeated too often?)",
                display_path(path)
            )
        })?;
        Ok(())
    }

    fn value(&mut self, id: Id, path: &str, depth: usize) -> Result<PtValue, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "at {}: nested deeper than {MAX_DEPTH} levels (or a reference cycle)",
                display_path(path)
            ));
        }
        self.spend(1, path)?;
        let nodes = self.nodes;
        let node = nodes
            .get(id)
            .ok_or_else(|| format!("at {}: dangling object", display_path(path)))?;
        Ok(match node {
            Node::None => PtValue::None,
            Node::Bool(b) => PtValue::Bool(*b),
            Node::Int(i) => PtValue::Int(*i),
            Node::Float(f) => PtValue::Float(*f),
            Node::Str(s) => PtValue::Str(s.clone()),
            Node::Tuple(items) | Node::List(items) => {
                let mut out = Vec::with_capacity(items.len().min(1 << 16));
                for (i, &item) in items.iter().enumerate() {
                    out.push(self.value(item, &join(path, &i.to_string()), depth + 1)?);
                }
                PtValue::List(out)
            }
            Node::Dict(pairs) => {
                let mut out: Vec<(String, PtValue)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                for &(k, v) in pairs {
                    let key = match nodes.get(k) {
                        Some(Node::Str(s)) => s.clone(),
                        Some(Node::Int(i)) => i.to_string(),
                        _ => {
                            return Err(format!(
                                "at {}: a dict key is neither a string nor an integer",
                                display_path(path)
                            ))
                        }
                    };
                    let value = self.value(v, &join(path, &key), depth + 1)?;
                    match index.get(&key) {
                        Some(&at) => out[at].1 = value,
                        None => {
                            index.insert(key.clone(), out.len());
                            out.push((key, value));
                        }
                    }
                }
                PtValue::Dict(out)
            }
            Node::Tensor(t) => PtValue::Tensor(self.tensor(t, path)?),
            Node::Global(_) => {
                return Err(format!(
                    "at {}: a bare class or function is not a value",
                    display_path(path)
                ))
            }
            Node::Storage(_) => {
                return Err(format!(
                    "at {}: a bare storage (not a tensor) is not supported",
                    display_path(path)
                ))
            }
        })
    }

    fn storage_bytes(&mut self, s: &StorageRef) -> Result<&'b [u8], String> {
        if let Some(b) = self.storages.get(&s.key) {
            return Ok(b);
        }
        let name = format!("{}data/{}", self.prefix, s.key);
        let bytes = self
            .archive
            .read(&name)?
            .ok_or_else(|| format!("storage entry {name} is missing"))?;
        self.storages.insert(s.key.clone(), bytes);
        Ok(bytes)
    }

    fn tensor(&mut self, t: &TensorRef, path: &str) -> Result<PtTensor, String> {
        let name = display_path(path);
        let fail = |why: String| format!("tensor {name}: {why}");
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| fail(format!("shape {:?} overflows", t.shape)))?;
        self.spend(numel, path)?;
        let dtype = t.storage.dtype;
        let bytes = self.storage_bytes(&t.storage).map_err(fail)?;
        let declared = t.storage.numel;
        let needed = declared
            .checked_mul(dtype.size())
            .ok_or_else(|| fail("storage size overflows".into()))?;
        if bytes.len() < needed {
            return Err(fail(format!(
                "storage {} declares {declared} {} elements but holds only {} bytes",
                t.storage.key,
                dtype.name(),
                bytes.len()
            )));
        }
        let bytes = &bytes[..needed];
        if numel > 0 {
            // The last element the view touches must lie inside the storage.
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                });
            match last {
                Some(last) if last < declared => {}
                _ => {
                    return Err(fail(format!(
                        "view (offset {}, shape {:?}, stride {:?}) reaches past its storage {} \
                         of {declared} elements",
                        t.offset, t.shape, t.stride, t.storage.key
                    )))
                }
            }
        }
        let be = self.big_endian;
        let data = if dtype.is_float() {
            PtData::F32(gather(t, numel, bytes, dtype.size(), |b| {
                decode_f32(dtype, b, be)
            }))
        } else {
            PtData::I64(gather(t, numel, bytes, dtype.size(), |b| {
                decode_i64(dtype, b, be)
            }))
        };
        Ok(PtTensor {
            dtype,
            shape: t.shape.clone(),
            data,
        })
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the top-level value".to_string()
    } else {
        format!("`{path}`")
    }
}

/// Copies the view `t` of `storage` (elements of `size` bytes) into a row-major buffer.
/// The caller has checked that every index the view reaches lies inside `storage`; an
/// element that does not (a bug) decodes from zero bytes rather than panicking.
fn gather<T>(
    t: &TensorRef,
    numel: usize,
    storage: &[u8],
    size: usize,
    decode: impl Fn(&[u8]) -> T,
) -> Vec<T> {
    const ZERO: [u8; 8] = [0; 8];
    let element = |i: usize| {
        let at = i * size;
        decode(storage.get(at..at + size).unwrap_or(&ZERO[..size]))
    };
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    let rank = t.shape.len();
    let row_major = {
        let mut expected = 1usize;
        let mut ok = true;
        for d in (0..rank).rev() {
            if t.shape[d] != 1 && t.stride[d] != expected {
                ok = false;
            }
            expected *= t.shape[d];
        }
        ok
    };
    if row_major {
        let start = t.offset * size;
        if let Some(run) = storage.get(start..start + numel * size) {
            out.extend(run.chunks_exact(size).map(decode));
            return out;
        }
    }
    if rank == 0 {
        out.push(element(t.offset));
        return out;
    }
    // Odometer over the outer dimensions, a strided run along the last one.
    let inner = t.shape[rank - 1];
    let inner_stride = t.stride[rank - 1];
    let mut index = vec![0usize; rank - 1];
    let mut base = t.offset;
    loop {
        out.extend((0..inner).map(|j| element(base + j * inner_stride)));
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            index[d] += 1;
            base += t.stride[d];
            if index[d] < t.shape[d] {
                break;
            }
            base -= t.stride[d] * t.shape[d];
            index[d] = 0;
        }
    }
}

fn array<const N: usize>(b: &[u8], big_endian: bool) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    if big_endian {
        a.reverse();
    }
    a
}

/// One element of a floating storage as f32 (`b` holds exactly `dtype.size()` bytes).
fn decode_f32(dtype: PtDtype, b: &[u8], big_endian: bool) -> f32 {
    match dtype {
        PtDtype::F32 => f32::from_le_bytes(array(b, big_endian)),
        PtDtype::F16 => half::f16::from_le_bytes(array(b, big_endian)).to_f32(),
        PtDtype::BF16 => half::bf16::from_le_bytes(array(b, big_endian)).to_f32(),
        PtDtype::F64 => f64::from_le_bytes(array(b, big_endian)) as f32,
        _ => decode_i64(dtype, b, big_endian) as f32,
    }
}

/// One element of an integer or bool storage as i64.
fn decode_i64(dtype: PtDtype, b: &[u8], big_endian: bool) -> i64 {
    match dtype {
        PtDtype::I64 => i64::from_le_bytes(array(b, big_endian)),
        PtDtype::I32 => i64::from(i32::from_le_bytes(array(b, big_endian))),
        PtDtype::I16 => i64::from(i16::from_le_bytes(array(b, big_endian))),
        PtDtype::I8 => i64::from(b[0] as i8),
        PtDtype::U8 => i64::from(b[0]),
        PtDtype::Bool => i64::from(b[0] != 0),
        _ => decode_f32(dtype, b, big_endian) as i64,
    }
}
