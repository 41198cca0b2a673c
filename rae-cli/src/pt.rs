//! Reading PyTorch `.pt` checkpoints (`torch.save` files) without Python.
//!
//! The released RAE artefacts are PyTorch files: the decoder `model.pt` (a raw state dict,
//! §2.6.4), the stage-2 `stage2_model.pt` (a state dict or `{'ema': sd, ...}`, §3.8) and the
//! latent statistics `stat.pt` (`{'mean': T, 'var': T}`, §2.4). This module reads them with
//! its own minimal ZIP reader (entries must be stored, uncompressed, as torch writes them;
//! ZIP64 archives are read) and a pickle machine that knows only what a state dict needs.
//! The legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`: pickles and
//! raw storage records one after another, see `legacy`) is read the same way, with the same
//! checks; the oldest, tar-based format and big-endian legacy files are refused by name.
//!
//! Safety: unpickling never executes or imports anything. The only globals a file may name
//! are `collections.OrderedDict`, `torch._utils._rebuild_tensor[_v2]`,
//! `torch._utils._rebuild_parameter[_with_state]` and the `torch.<X>Storage` classes used in
//! storage persistent ids; any other global (`os.system`, `builtins.eval`, a user class,
//! `argparse.Namespace`, numpy scalars) makes the whole file an error that names it. Malformed
//! input (truncation, bad offsets, CRC mismatch, stack underflow, memo misses, views
//! reaching past their storage, nesting deeper than [`MAX_DEPTH`]) is an error too, never a
//! panic, and so is a file that would expand in memory past [`byte_budget`] of its size
//! (shared references repeated over and over: every string, key, name, shape and tensor
//! value is counted in bytes) or past what the allocator gives.
//!
//! Three ways to read, which check the same things: [`read_pt`] decodes every tensor
//! ([`PtTensor`]); [`read_pt_layout`] only lists dtypes and shapes, reading no tensor data
//! into memory ([`PtLayout`], for `inspect`); [`read_pt_raw`] copies the stored bytes in
//! their own dtype ([`PtRawTensor`], for `convert`, so a U8 tensor stays one byte per
//! element). The time is linear in the file's size and the number of values.
//!
//! Conversions: tuples become [`PtNode::List`]; integer dict keys become their decimal
//! string (optimizer states key parameters by index); other key types are refused. A
//! repeated key keeps the last value, as Python does. Tensors are copied into contiguous
//! row-major buffers, whatever their storage offset and strides; with [`read_pt`], floating
//! types become f32 (f16 and bf16 exactly, f64 rounded), integer and bool types become i64.

mod budget;
mod convert;
mod legacy;
mod pickle;
mod tensor;
mod value;
pub(crate) mod zip;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;

use rae_core::Error;

pub use budget::{byte_budget, BYTES_PER_FILE_BYTE, BYTE_BUDGET_FLOOR};
pub use convert::MAX_DEPTH;
pub use value::{
    flatten_tensors, into_tensors, select_state_dict, PtData, PtDtype, PtLayout, PtNode,
    PtRawTensor, PtTensor, PtValue, STATE_DICT_KEYS,
};

use budget::Budget;
use convert::Converter;
use tensor::{Decode, Layout, Materialise, Raw};

/// Whether `bytes` look like a `torch.save` file: a zip archive, or the legacy (torch < 1.6)
/// format. The first 16 bytes are enough to tell.
pub fn looks_like_pt(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || legacy::sniff(bytes)
}

/// Reads the file at `path` with [`read_pt`], naming it by its path in errors.
pub fn read_pt_file(path: &Path) -> Result<PtValue, Error> {
    let source = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::format(&source, format!("cannot read: {e}")))?;
    read_pt(&bytes, &source)
}

/// Reads a `torch.save` file held in `bytes`, decoding every tensor. `source` names it in
/// errors, which are all [`Error::Format`] and name the entry, global or tensor at fault.
pub fn read_pt(bytes: &[u8], source: &str) -> Result<PtValue, Error> {
    read_with::<Decode>(bytes, source)
}

/// Like [`read_pt`], with the same checks (storages located and CRC-checked, views inside
/// their storages), but tensors are listed by dtype and shape only: no tensor value is
/// copied or decoded.
pub fn read_pt_layout(bytes: &[u8], source: &str) -> Result<PtNode<PtLayout>, Error> {
    read_with::<Layout>(bytes, source)
}

/// Like [`read_pt`], but tensors keep their stored dtype: contiguous little-endian bytes,
/// one to eight per element as stored, not widened.
pub fn read_pt_raw(bytes: &[u8], source: &str) -> Result<PtNode<PtRawTensor>, Error> {
    read_with::<Raw>(bytes, source)
}

fn read_with<M: Materialise>(bytes: &[u8], source: &str) -> Result<PtNode<M::Tensor>, Error> {
    let fail = |reason: String| Error::format(source, reason);
    if legacy::sniff(bytes) {
        return read_legacy::<M>(bytes).map_err(fail);
    }
    if bytes.get(257..262) == Some(b"ustar".as_slice()) {
        return Err(fail(
            "a tar archive: the oldest, tar-based torch.save format is not supported; load \
             it with torch and re-save it with a current torch.save"
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
    let mut budget = Budget::for_file(bytes.len());
    let program =
        pickle::unpickle(pkl, &mut budget).map_err(|e| fail(format!("{pkl_name}: {e}")))?;
    let mut conv = Converter::<M> {
        nodes: &program.nodes,
        archive: Some(&archive),
        prefix: &prefix,
        big_endian,
        budget: &mut budget,
        storages: HashMap::new(),
        path: String::new(),
        mode: PhantomData,
    };
    conv.value(program.root, 0).map_err(fail)
}

/// Reads a legacy (torch < 1.6) file: its pickles and storage records, then the value as
/// for a zip file.
fn read_legacy<M: Materialise>(bytes: &[u8]) -> Result<PtNode<M::Tensor>, String> {
    let mut budget = Budget::for_file(bytes.len());
    let legacy = legacy::parse(bytes, &mut budget)?;
    let mut conv = Converter::<M> {
        nodes: &legacy.program.nodes,
        archive: None,
        prefix: "",
        big_endian: false,
        budget: &mut budget,
        storages: legacy.storages,
        path: String::new(),
        mode: PhantomData,
    };
    conv.value(legacy.program.root, 0)
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
