//! The objects of the pickle machine: allow-listed globals, storage references, tensor
//! views and the arena [`Node`]s that hold them.

use std::rc::Rc;

use super::super::value::PtDtype;

/// Index of a node in the arena.
pub(in crate::pt) type Id = usize;

/// A callable or class a pickle may name. Everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::pt) enum Global {
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor`
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`
    RebuildParameterWithState,
    /// `torch.<X>Storage`: only meaningful inside a persistent id.
    Storage(PtDtype),
}

impl Global {
    /// The global `module.name`, if it is one of the allowed ones.
    pub(in crate::pt) fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", storage) => Global::Storage(match storage {
                "FloatStorage" => PtDtype::F32,
                "HalfStorage" => PtDtype::F16,
                "BFloat16Storage" => PtDtype::BF16,
                "DoubleStorage" => PtDtype::F64,
                "LongStorage" => PtDtype::I64,
                "IntStorage" => PtDtype::I32,
                "ShortStorage" => PtDtype::I16,
                "CharStorage" => PtDtype::I8,
                "ByteStorage" => PtDtype::U8,
                "BoolStorage" => PtDtype::Bool,
                _ => return None,
            }),
            _ => return None,
        })
    }
}

/// A storage named by a persistent id `('storage', torch.XStorage, key, location, numel)`,
/// or in the legacy format `(..., numel, view_metadata)`.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) struct StorageRef {
    /// Element type.
    pub dtype: PtDtype,
    /// The archive entry is `<prefix>/data/<key>`, or the legacy file's storage record of
    /// that key (shared, so every tensor of a storage refers to one copy).
    pub key: Rc<str>,
    /// Elements the storage declares.
    pub numel: usize,
    /// A legacy storage view `(view_key, offset, size)`: the tensor's storage is the
    /// `size` elements of the storage `key` from element `offset` on.
    pub view: Option<StorageView>,
}

/// Part of a storage, in elements (legacy files' `view_metadata`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::pt) struct StorageView {
    /// First element of the view in its root storage.
    pub offset: usize,
    /// Elements in the view.
    pub numel: usize,
}

/// A strided view of a storage (what `_rebuild_tensor_v2` describes).
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) struct TensorRef {
    /// The storage.
    pub storage: StorageRef,
    /// First element, in elements.
    pub offset: usize,
    /// Sizes, outermost first.
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<usize>,
}

/// One object of the machine.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) enum Node {
    /// `None`
    None,
    /// `True` / `False`
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A str (shared: a memo reference or a storage key costs no copy).
    Str(Rc<str>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict or OrderedDict: (key, value) in insertion order; a repeated key is resolved
    /// (last wins) when the value is converted.
    Dict(Vec<(Id, Id)>),
    /// An allow-listed global.
    Global(Global),
    /// A storage reference (from BINPERSID).
    Storage(StorageRef),
    /// A tensor view (boxed, so the other nodes stay small).
    Tensor(Box<TensorRef>),
}
