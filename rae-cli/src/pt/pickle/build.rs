//! What the allow-listed globals build: storage references from persistent ids (BINPERSID)
//! and the values REDUCE makes by "calling" a global (an empty dict, a tensor view, a
//! parameter's data), all from objects already in the arena.

use std::rc::Rc;

use super::node::{Global, Id, Node, StorageRef, StorageView, TensorRef};
use crate::pt::budget::Budget;

/// Longest storage key accepted (torch writes small decimal numbers).
const MAX_STORAGE_KEY: usize = 256;

/// What REDUCE pushes: a new object, or one that exists already.
pub(super) enum Reduced {
    New(Node),
    Existing(Id),
}

/// The arena as REDUCE and BINPERSID see it: the objects made so far, and the budget that
/// copies are charged to.
pub(super) struct Builder<'m> {
    pub(super) nodes: &'m [Node],
    pub(super) budget: &'m mut Budget,
}

impl Builder<'_> {
    fn node(&self, id: Id) -> &Node {
        // Ids only come from the machine's pushes, so they are always in range.
        &self.nodes[id]
    }

    /// `('storage', torch.XStorage, key, location, numel)`, or the legacy format's
    /// `(..., numel, view_metadata)` where `view_metadata` is None or
    /// `(view_key, offset, size)`.
    pub(super) fn persistent(&self, pid: Id) -> Result<StorageRef, String> {
        let bad = || {
            "persistent id is not ('storage', torch.<X>Storage, key, location, numel[, \
             view_metadata])"
                .to_string()
        };
        let Node::Tuple(items) = self.node(pid) else {
            return Err(bad());
        };
        let (kind, ty, key, numel, view) = match items.as_slice() {
            [kind, ty, key, _location, numel] => (kind, ty, key, numel, None),
            [kind, ty, key, _location, numel, view] => (kind, ty, key, numel, Some(*view)),
            _ => return Err(bad()),
        };
        if !matches!(self.node(*kind), Node::Str(s) if &**s == "storage") {
            return Err(bad());
        }
        let Node::Global(Global::Storage(dtype)) = self.node(*ty) else {
            return Err(bad());
        };
        let key: Rc<str> = match self.node(*key) {
            Node::Str(s) => Rc::clone(s),
            Node::Int(i) => Rc::from(i.to_string()),
            _ => return Err(bad()),
        };
        if key.is_empty()
            || key.len() > MAX_STORAGE_KEY
            || key.contains('/')
            || key.contains('\\')
            || key.contains("..")
        {
            let shown: String = key.chars().take(64).collect();
            return Err(format!(
                "storage key {shown:?}{} is not a plain name of at most {MAX_STORAGE_KEY} bytes",
                if shown.len() < key.len() { "…" } else { "" }
            ));
        }
        let numel = self.usize_of(*numel, "storage size")?;
        let view = match view.map(|v| self.node(v)) {
            None | Some(Node::None) => None,
            Some(Node::Tuple(v)) => match v.as_slice() {
                [_view_key, offset, size] => Some(StorageView {
                    offset: self.usize_of(*offset, "storage view offset")?,
                    numel: self.usize_of(*size, "storage view size")?,
                }),
                _ => return Err("storage view_metadata is not (key, offset, size)".into()),
            },
            Some(_) => return Err("storage view_metadata is neither None nor a tuple".into()),
        };
        Ok(StorageRef {
            dtype: *dtype,
            key,
            numel,
            view,
        })
    }

    fn usize_of(&self, id: Id, what: &str) -> Result<usize, String> {
        match self.node(id) {
            Node::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
            _ => Err(format!("{what} is not an integer")),
        }
    }

    /// A tuple of sizes or strides, copied into a new vector charged to the budget (a
    /// memoised tuple can be named by many tensors).
    fn usizes_of(&mut self, id: Id, what: &str) -> Result<Vec<usize>, String> {
        let n = match self.node(id) {
            Node::Tuple(items) | Node::List(items) => items.len(),
            _ => return Err(format!("{what} is not a tuple")),
        };
        self.budget.spend(n.saturating_mul(8), || {
            format!("a {what} tuple of {n} numbers")
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| format!("out of memory for a {what} tuple of {n} numbers"))?;
        let (Node::Tuple(items) | Node::List(items)) = self.node(id) else {
            return Err(format!("{what} is not a tuple"));
        };
        for &i in items {
            out.push(self.usize_of(i, what)?);
        }
        Ok(out)
    }

    /// The `(key, value)` pairs of a list or tuple of two-element lists or tuples.
    fn pairs_of(&self, items: Id) -> Result<Vec<(Id, Id)>, String> {
        let (Node::Tuple(items) | Node::List(items)) = self.node(items) else {
            return Err("collections.OrderedDict called with something not a list".into());
        };
        let mut out = Vec::new();
        out.try_reserve_exact(items.len())
            .map_err(|_| format!("out of memory for a dict of {} items", items.len()))?;
        for &i in items {
            match self.node(i) {
                Node::Tuple(kv) | Node::List(kv) if kv.len() == 2 => out.push((kv[0], kv[1])),
                _ => return Err("collections.OrderedDict item is not a (key, value) pair".into()),
            }
        }
        Ok(out)
    }

    pub(super) fn reduce(&mut self, func: Id, args: Id) -> Result<Reduced, String> {
        let Node::Global(g) = *self.node(func) else {
            return Err("REDUCE on something that is not an allowed global".into());
        };
        let Node::Tuple(args) = self.node(args) else {
            return Err("REDUCE arguments are not a tuple".into());
        };
        // Every allowed callable takes at most 7 arguments: refuse longer tuples before
        // copying them (a memoised tuple may be long and used by many REDUCEs).
        if args.len() > 7 {
            return Err(format!(
                "REDUCE with {} arguments: no allowed callable takes more than 7",
                args.len()
            ));
        }
        let args = args.clone();
        match g {
            Global::OrderedDict => match args[..] {
                [] => Ok(Reduced::New(Node::Dict(Vec::new()))),
                // `OrderedDict([[key, value], ...])`: how torch's legacy (pre-1.6) writer
                // pickled some state dicts (the `lpips` package's v0.1 weights).
                [items] => Ok(Reduced::New(Node::Dict(self.pairs_of(items)?))),
                _ => Err(format!(
                    "collections.OrderedDict called with {} arguments",
                    args.len()
                )),
            },
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let name = if g == Global::RebuildTensor {
                    "_rebuild_tensor"
                } else {
                    "_rebuild_tensor_v2"
                };
                // (storage, storage_offset, size, stride[, requires_grad, backward_hooks
                // [, metadata]])
                let ok_len = if g == Global::RebuildTensor {
                    args.len() == 4
                } else {
                    (4..=7).contains(&args.len())
                };
                if !ok_len {
                    return Err(format!("{name} called with {} arguments", args.len()));
                }
                let Node::Storage(storage) = self.node(args[0]) else {
                    return Err(format!("{name}: first argument is not a storage"));
                };
                let storage = storage.clone();
                let offset = self.usize_of(args[1], "storage offset")?;
                let shape = self.usizes_of(args[2], "tensor size")?;
                let stride = self.usizes_of(args[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return Err(format!(
                        "{name}: {} sizes but {} strides",
                        shape.len(),
                        stride.len()
                    ));
                }
                Ok(Reduced::New(Node::Tensor(Box::new(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                }))))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
                let want = if g == Global::RebuildParameter { 3 } else { 4 };
                if args.len() != want {
                    return Err(format!(
                        "_rebuild_parameter called with {} arguments",
                        args.len()
                    ));
                }
                if !matches!(self.node(args[0]), Node::Tensor(_)) {
                    return Err("_rebuild_parameter: data is not a tensor".into());
                }
                Ok(Reduced::Existing(args[0]))
            }
            Global::Storage(dtype) => Err(format!(
                "a {} storage class may only appear in a persistent id",
                dtype.name()
            )),
        }
    }
}
