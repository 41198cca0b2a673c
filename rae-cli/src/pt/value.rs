//! What the `.pt` reader hands out: values ([`PtNode`]) whose tensors are decoded
//! ([`PtTensor`]), listed only ([`PtLayout`]) or copied as stored ([`PtRawTensor`]), and the
//! walks that name every tensor of a nested checkpoint.

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

/// A tensor read from a `.pt` file, its values decoded.
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

/// A tensor located and checked but not read ([`read_pt_layout`](super::read_pt_layout)):
/// what a listing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtLayout {
    /// The element type in the file.
    pub dtype: PtDtype,
    /// Sizes, outermost first; empty for a 0-d tensor.
    pub shape: Vec<usize>,
}

/// A tensor's values as stored, in its own dtype ([`read_pt_raw`](super::read_pt_raw)):
/// contiguous, row-major, little-endian, `dtype.size()` bytes per element (BOOL as 0 or 1).
#[derive(Debug, Clone, PartialEq)]
pub struct PtRawTensor {
    /// The element type.
    pub dtype: PtDtype,
    /// Sizes, outermost first; empty for a 0-d tensor.
    pub shape: Vec<usize>,
    /// `numel × dtype.size()` bytes.
    pub data: Vec<u8>,
}

/// A value read from a `.pt` file, its tensors of type `T`.
#[derive(Debug, Clone, PartialEq)]
pub enum PtNode<T> {
    /// A tensor (or an `nn.Parameter`, which is read as its data).
    Tensor(T),
    /// A dict or OrderedDict, in insertion order; keys are strings (integer keys converted).
    Dict(Vec<(String, PtNode<T>)>),
    /// A list or tuple.
    List(Vec<PtNode<T>>),
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

/// A value whose tensors are decoded ([`read_pt`](super::read_pt)).
pub type PtValue = PtNode<PtTensor>;

impl<T> PtNode<T> {
    /// The value under `key`, when `self` is a dict that has it.
    pub fn get(&self, key: &str) -> Option<&PtNode<T>> {
        match self {
            PtNode::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The tensor, when `self` is one.
    pub fn as_tensor(&self) -> Option<&T> {
        match self {
            PtNode::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The entries, when `self` is a dict.
    pub fn as_dict(&self) -> Option<&[(String, PtNode<T>)]> {
        match self {
            PtNode::Dict(entries) => Some(entries),
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
pub fn select_state_dict<'a, T>(value: &'a PtNode<T>, keys: &[&str]) -> &'a PtNode<T> {
    keys.iter()
        .filter_map(|k| value.get(k))
        .find(|v| matches!(v, PtNode::Dict(_)))
        .unwrap_or(value)
}

/// Appends the path segment `key` to the dotted name in `path` (no dot at the start).
pub(super) fn push_segment(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// Every tensor in `value` with its dotted name, in file order: nested dict keys are
/// joined with `.` (`{"ema": {"x.weight": T}}` gives `ema.x.weight`) and list items are
/// named by their index, as PyTorch names `nn.ModuleList` entries. A bare tensor is named
/// `""`. Non-tensor leaves are skipped. The time is linear in the size of the value and of
/// the names made.
pub fn flatten_tensors<T>(value: &PtNode<T>) -> Vec<(String, &T)> {
    fn walk<'a, T>(v: &'a PtNode<T>, path: &mut String, out: &mut Vec<(String, &'a T)>) {
        let len = path.len();
        match v {
            PtNode::Tensor(t) => out.push((path.clone(), t)),
            PtNode::Dict(entries) => {
                for (k, v) in entries {
                    push_segment(path, k);
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            PtNode::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    push_segment(path, &i.to_string());
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

/// Like [`flatten_tensors`], but takes the value and moves the tensors out, so a large
/// checkpoint is not held twice.
pub fn into_tensors<T>(value: PtNode<T>) -> Vec<(String, T)> {
    fn walk<T>(v: PtNode<T>, path: &mut String, out: &mut Vec<(String, T)>) {
        let len = path.len();
        match v {
            PtNode::Tensor(t) => out.push((path.clone(), t)),
            PtNode::Dict(entries) => {
                for (k, v) in entries {
                    push_segment(path, &k);
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            PtNode::List(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    push_segment(path, &i.to_string());
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}
