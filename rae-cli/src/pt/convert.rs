//! Turning the pickle's arena into [`PtNode`]s, reading storages as tensors need them and
//! charging everything materialised to the file's [`Budget`].

use std::collections::HashMap;
use std::marker::PhantomData;
use std::mem::size_of;
use std::rc::Rc;

use super::budget::Budget;
use super::pickle::{Id, Node, StorageRef, TensorRef};
use super::tensor::{Materialise, View};
use super::value::{push_segment, PtNode};
use super::zip;

/// Deepest nesting of dicts and lists accepted (a state dict needs 2 or 3 levels).
pub const MAX_DEPTH: usize = 64;

/// The conversion of one file's arena, tensors made by `M`.
pub(super) struct Converter<'a, 'b, M> {
    pub(super) nodes: &'a [Node],
    /// Where storages are read from; `None` for a legacy file, whose storages are all in
    /// `storages` from the start.
    pub(super) archive: Option<&'a zip::Archive<'b>>,
    /// The folder of every entry (`archive/`).
    pub(super) prefix: &'a str,
    pub(super) big_endian: bool,
    pub(super) budget: &'a mut Budget,
    /// Storage bytes already located and CRC-checked (or a legacy file's records), by key.
    pub(super) storages: HashMap<Rc<str>, &'b [u8]>,
    /// The dotted name of the value being converted (`ema.blocks.0.weight`).
    pub(super) path: String,
    pub(super) mode: PhantomData<M>,
}

/// `path` as errors show it.
fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the top-level value".to_string()
    } else {
        format!("`{path}`")
    }
}

impl<'b, M: Materialise> Converter<'_, 'b, M> {
    /// The error `why` at the current path.
    fn at(&self, why: impl std::fmt::Display) -> String {
        format!("at {}: {why}", display_path(&self.path))
    }

    /// Charges `bytes` for `what` at the current path.
    fn spend(&mut self, bytes: usize, what: impl FnOnce() -> String) -> Result<(), String> {
        let result = self.budget.spend(bytes, what);
        result.map_err(|e| self.at(e))
    }

    /// Converts `id` (the value at `self.path`), `depth` containers deep.
    pub(super) fn value(&mut self, id: Id, depth: usize) -> Result<PtNode<M::Tensor>, String> {
        if depth > MAX_DEPTH {
            return Err(self.at(format!(
                "nested deeper than {MAX_DEPTH} levels (or a reference cycle)"
            )));
        }
        self.spend(size_of::<PtNode<M::Tensor>>(), || "a value".to_string())?;
        let nodes = self.nodes;
        let node = nodes.get(id).ok_or_else(|| self.at("dangling object"))?;
        Ok(match node {
            Node::None => PtNode::None,
            Node::Bool(b) => PtNode::Bool(*b),
            Node::Int(i) => PtNode::Int(*i),
            Node::Float(f) => PtNode::Float(*f),
            Node::Str(s) => {
                let n = s.len();
                self.spend(n, || format!("a string of {n} bytes"))?;
                PtNode::Str(s.to_string())
            }
            Node::Tuple(items) | Node::List(items) => {
                let mut out = Vec::new();
                out.try_reserve_exact(items.len())
                    .map_err(|_| self.at(format!("out of memory for {} items", items.len())))?;
                let len = self.path.len();
                for (i, &item) in items.iter().enumerate() {
                    push_segment(&mut self.path, &i.to_string());
                    let v = self.value(item, depth + 1);
                    self.path.truncate(len);
                    out.push(v?);
                }
                PtNode::List(out)
            }
            Node::Dict(pairs) => PtNode::Dict(self.dict(pairs, depth)?),
            Node::Tensor(t) => PtNode::Tensor(self.tensor(t)?),
            Node::Global(_) => return Err(self.at("a bare class or function is not a value")),
            Node::Storage(_) => {
                return Err(self.at("a bare storage (not a tensor) is not supported"))
            }
        })
    }

    /// A dict's entries in insertion order, a repeated key keeping its first place and its
    /// last value (as Python does).
    fn dict(
        &mut self,
        pairs: &[(Id, Id)],
        depth: usize,
    ) -> Result<Vec<(String, PtNode<M::Tensor>)>, String> {
        let nodes = self.nodes;
        let mut out: Vec<(String, PtNode<M::Tensor>)> = Vec::new();
        let mut index: HashMap<Rc<str>, usize> = HashMap::new();
        let len = self.path.len();
        for &(k, v) in pairs {
            let key: Rc<str> = match nodes.get(k) {
                Some(Node::Str(s)) => Rc::clone(s),
                Some(Node::Int(i)) => Rc::from(i.to_string()),
                _ => return Err(self.at("a dict key is neither a string nor an integer")),
            };
            let n = key.len();
            self.spend(n + size_of::<String>(), || {
                format!("a dict key of {n} bytes")
            })?;
            push_segment(&mut self.path, &key);
            let value = self.value(v, depth + 1);
            self.path.truncate(len);
            let value = value?;
            match index.get(&key) {
                Some(&at) => out[at].1 = value,
                None => {
                    out.try_reserve(1)
                        .map_err(|_| self.at("out of memory for a dict entry"))?;
                    index.insert(Rc::clone(&key), out.len());
                    out.push((key.to_string(), value));
                }
            }
        }
        Ok(out)
    }

    fn storage_bytes(&mut self, s: &StorageRef) -> Result<&'b [u8], String> {
        if let Some(b) = self.storages.get(&s.key) {
            return Ok(b);
        }
        let Some(archive) = self.archive else {
            return Err(format!(
                "storage {} is not in the file's list of storage keys",
                s.key
            ));
        };
        let name = format!("{}data/{}", self.prefix, s.key);
        let bytes = archive
            .read(&name)?
            .ok_or_else(|| format!("storage entry {name} is missing"))?;
        self.storages.insert(Rc::clone(&s.key), bytes);
        Ok(bytes)
    }

    fn tensor(&mut self, t: &TensorRef) -> Result<M::Tensor, String> {
        let name = display_path(&self.path);
        let fail = |why: String| format!("tensor {name}: {why}");
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| fail(format!("shape {:?} overflows", t.shape)))?;
        let dtype = t.storage.dtype;
        // The values in the form `M` makes them, the shape, and the name the tensor will be
        // listed under.
        let bytes = numel
            .checked_mul(M::bytes_per_element(dtype))
            .and_then(|b| b.checked_add(t.shape.len() * size_of::<usize>()))
            .and_then(|b| b.checked_add(self.path.len()))
            .ok_or_else(|| fail(format!("shape {:?} overflows", t.shape)))?;
        self.budget
            .spend(bytes, || {
                format!(
                    "its {numel} {} values, shape and name ({bytes} bytes)",
                    dtype.name()
                )
            })
            .map_err(fail)?;
        let storage = self.storage_bytes(&t.storage).map_err(fail)?;
        let mut declared = t.storage.numel;
        let mut needed = declared
            .checked_mul(dtype.size())
            .ok_or_else(|| fail("storage size overflows".into()))?;
        if storage.len() < needed {
            return Err(fail(format!(
                "storage {} declares {declared} {} elements but holds only {} bytes",
                t.storage.key,
                dtype.name(),
                storage.len()
            )));
        }
        let mut storage = &storage[..needed];
        if let Some(v) = t.storage.view {
            // A legacy storage view: elements offset..offset + numel of the storage.
            let range = v
                .offset
                .checked_add(v.numel)
                .filter(|&end| end <= declared)
                .map(|end| v.offset * dtype.size()..end * dtype.size())
                .ok_or_else(|| {
                    fail(format!(
                        "storage view (offset {}, {} elements) reaches past its storage {} of \
                         {declared} elements",
                        v.offset, v.numel, t.storage.key
                    ))
                })?;
            storage = &storage[range];
            declared = v.numel;
            needed = storage.len();
        }
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
        let view = View {
            dtype,
            shape: &t.shape,
            stride: &t.stride,
            offset: t.offset,
            numel,
            storage: &storage[..needed],
            big_endian: self.big_endian,
        };
        M::make(&view).map_err(fail)
    }
}
