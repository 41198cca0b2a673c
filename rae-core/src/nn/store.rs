//! Host-side named tensors and loading/saving a [`Module`] by checkpoint names, reporting
//! missing, unexpected and mis-shaped tensors by name.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use super::{Module, ParamKind};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::shape::Shape;

/// A tensor on the host: shape and f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from shape and data (lengths must agree).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::invalid(
                "host tensor",
                alloc::format!("shape {:?} needs {n} values, got {}", shape, data.len()),
            ));
        }
        Ok(HostTensor { shape, data })
    }
}

/// Named host tensors in insertion order (a checkpoint in memory), with a name index so
/// that building and querying a set of `n` tensors costs `O(n log n)`, not `O(n²)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTensors {
    entries: Vec<(String, HostTensor)>,
    index: BTreeMap<String, usize>,
}

impl HostTensors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn from_entries(entries: Vec<(String, HostTensor)>) -> Self {
        let mut out = HostTensors::new();
        for (n, t) in entries {
            out.insert(n, t);
        }
        out
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = t,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, t));
            }
        }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// Removes and returns the tensor named `name` (`O(n)`: the order is kept).
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let i = self.index.remove(name)?;
        let t = self.entries.remove(i).1;
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        Some(t)
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of values of all tensors together.
    pub fn total_values(&self) -> u128 {
        self.entries.iter().map(|(_, t)| t.data.len() as u128).sum()
    }

    /// The tensors whose names start with `prefix`, with the prefix removed (e.g. the `ema.`
    /// half of a training checkpoint).
    pub fn sub(&self, prefix: &str) -> HostTensors {
        Self::from_entries(
            self.entries
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (String::from(s), t.clone())))
                .collect(),
        )
    }

    /// Removes `prefix` from every name that has it (e.g. `dinov2_with_registers.`).
    pub fn strip_prefix(self, prefix: &str) -> HostTensors {
        Self::from_entries(
            self.entries
                .into_iter()
                .map(|(n, t)| match n.strip_prefix(prefix) {
                    Some(s) => (String::from(s), t),
                    None => (n, t),
                })
                .collect(),
        )
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters set from the file.
    pub loaded: usize,
    /// Frozen buffers absent from the file, kept as constructed.
    pub kept_buffers: Vec<String>,
    /// File tensors the model has no parameter for.
    pub unexpected: Vec<String>,
}

/// Loads every parameter of `module` from `src` by name. Missing trainable parameters, and
/// buffers not listed in `optional_buffers`, are an error listing all missing names; a
/// shape mismatch is an error naming the tensor and both shapes; tensors in the file that the
/// model lacks are an error unless `allow_unexpected` (then they are reported).
pub fn load_module<B: Backend, M: Module<B>>(
    b: &B,
    module: &mut M,
    src: &HostTensors,
    model: &str,
    optional_buffers: &[&str],
    allow_unexpected: bool,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let mut first_err: Option<Error> = None;
    let mut seen = BTreeSet::new();
    module.visit_mut(&mut |p| {
        if first_err.is_some() {
            return;
        }
        seen.insert(p.name.clone());
        match src.get(&p.name) {
            Some(t) => {
                // A leading or trailing singleton axis difference is tolerated only when the
                // element counts agree and the non-singleton axes match.
                let same = squeeze(&t.shape) == squeeze(p.value.dims());
                if !same {
                    first_err = Some(match (Shape::new(p.value.dims()), Shape::new(&t.shape)) {
                        (Ok(expected), Ok(got)) => Error::TensorShape {
                            name: p.name.clone(),
                            expected,
                            got,
                        },
                        (Err(e), _) | (_, Err(e)) => e,
                    });
                    return;
                }
                if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
                    let count = t.data.iter().filter(|v| !v.is_finite()).count();
                    first_err = Some(Error::invalid(
                        alloc::format!("{model}: tensor {}", p.name),
                        alloc::format!(
                            "holds {count} non-finite values (the first, {}, at index {bad}); \
                             the checkpoint is corrupt or its training diverged",
                            t.data[bad]
                        ),
                    ));
                    return;
                }
                match b.upload(&t.data, p.value.dims()) {
                    Ok(v) => {
                        p.value = v;
                        report.loaded += 1;
                    }
                    Err(e) => first_err = Some(e),
                }
            }
            None => {
                if p.kind == ParamKind::Buffer && optional_buffers.contains(&p.name.as_str()) {
                    report.kept_buffers.push(p.name.clone());
                } else {
                    missing.push(p.name.clone());
                }
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    if !missing.is_empty() {
        return Err(Error::MissingTensors {
            model: String::from(model),
            names: missing,
        });
    }
    report.unexpected = src
        .names()
        .filter(|n| !seen.contains(*n))
        .map(String::from)
        .collect();
    if !allow_unexpected && !report.unexpected.is_empty() {
        let mut list = report.unexpected.clone();
        list.truncate(8);
        return Err(Error::config(
            model,
            alloc::format!(
                "the checkpoint has {} tensors this model does not have (is it a different model or size?): {}",
                report.unexpected.len(),
                list.join(", ")
            ),
        ));
    }
    Ok(report)
}

fn squeeze(d: &[usize]) -> Vec<usize> {
    d.iter().copied().filter(|&x| x != 1).collect()
}

/// Downloads every parameter of `module` into host tensors, in visiting order.
pub fn save_module<B: Backend, M: Module<B>>(b: &B, module: &M) -> Result<HostTensors> {
    let mut out = HostTensors::new();
    let mut err = None;
    module.visit(&mut |p| {
        if err.is_some() {
            return;
        }
        match b.download(&p.value) {
            Ok(data) => out.insert(
                p.name.clone(),
                HostTensor {
                    shape: p.value.dims().to_vec(),
                    data,
                },
            ),
            Err(e) => err = Some(e),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl HostTensors {
    /// Every floating-point tensor of a safetensors file (integer tensors are skipped; read
    /// them with [`crate::safetensors::SafeTensors::read_i64`]). `source` names the file.
    pub fn from_safetensors(bytes: &[u8], source: &str) -> Result<HostTensors> {
        let st = crate::safetensors::SafeTensors::parse(bytes, source)?;
        let mut out = HostTensors::new();
        for view in st.tensors() {
            if !view.dtype.is_float() {
                continue;
            }
            let data = view
                .to_f32()
                .map_err(|e| Error::format(source, alloc::format!("tensor {}: {e}", view.name)))?;
            out.insert(
                view.name.clone(),
                HostTensor::new(view.shape.clone(), data)?,
            );
        }
        Ok(out)
    }

    /// Serialises all tensors as f32 safetensors with `metadata`.
    pub fn to_safetensors(&self, metadata: &[(String, String)]) -> Result<Vec<u8>> {
        let outs: Vec<crate::safetensors::TensorOut<'_>> = self
            .entries
            .iter()
            .map(|(n, t)| crate::safetensors::TensorOut::f32(n, &t.shape, &t.data))
            .collect();
        crate::safetensors::serialize(&outs, metadata)
    }
}
