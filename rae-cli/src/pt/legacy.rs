//! The legacy `torch.save` format: torch < 1.6, or `_use_new_zipfile_serialization=False`.
//!
//! One file holds, one after another: a pickle of the magic number
//! `0x1950a86a20f9469cfc6c`, a pickle of the protocol version (1001), a pickle of `sys_info`
//! (`{'protocol_version', 'little_endian', 'type_sizes'}`), the pickle of the value (its
//! storages named by persistent ids `('storage', torch.XStorage, key, location, numel,
//! view_metadata)`), a pickle of the list of storage keys, and then, for each key in that
//! list, its storage: the element count as a little-endian int64 and the elements' bytes,
//! little-endian, with no padding. Every pickle runs on the same machine as the zip format's
//! `data.pkl` (nothing executed, the same allow-list) and is charged to the same budget;
//! storage records are not copied but sliced out of the file.
//!
//! Refused with a message naming the problem: a file written on a big-endian machine, a
//! protocol version other than 1001, a storage listed twice or listed but used by no tensor,
//! a record whose count disagrees with the pickle's or runs past the end of the file.

use std::collections::HashMap;
use std::rc::Rc;

use super::budget::Budget;
use super::pickle::{self, Node, Unpickled};
use super::value::PtDtype;

/// The magic number's 10 little-endian bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The only protocol version torch writes and reads.
const PROTOCOL_VERSION: i64 = 1001;

/// Where the magic number's LONG1 opcode starts: after PROTO and, from protocol 4 on, a
/// FRAME header. `None` if `bytes` do not open with PROTO 2 to 5.
fn long1_at(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [0x80, 2..=5, 0x95, ..] => Some(11),
        [0x80, 2..=5, ..] => Some(2),
        _ => None,
    }
}

/// LONG1 of 10 bytes, then the magic number.
fn magic_opcodes() -> [u8; 12] {
    let mut m = [0x8a, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    m[2..].copy_from_slice(&MAGIC);
    m
}

/// Whether `bytes` open like a legacy file: PROTO, an optional FRAME header, LONG1 of 10
/// bytes and the magic number's first 3 bytes (16 bytes are enough for every protocol; the
/// rest of the magic number is checked when the file is read, so damage there is named).
pub(super) fn sniff(bytes: &[u8]) -> bool {
    let Some(at) = long1_at(bytes) else {
        return false;
    };
    bytes.get(at..at + 5) == Some(&magic_opcodes()[..5])
}

/// A legacy file taken apart: the value's pickle, and every storage's bytes by key.
pub(super) struct Legacy<'b> {
    pub program: Unpickled,
    pub storages: HashMap<Rc<str>, &'b [u8]>,
}

/// Reads the pickles and storage records of a legacy file.
pub(super) fn parse<'b>(bytes: &'b [u8], budget: &mut Budget) -> Result<Legacy<'b>, String> {
    let fail = |why: String| format!("legacy torch.save format: {why}");
    let mut pos = magic_end(bytes).ok_or_else(|| fail("bad magic number".into()))?;
    let mut next = |what: &str, budget: &mut Budget| -> Result<Unpickled, String> {
        let rest = bytes.get(pos..).unwrap_or_default();
        let p = pickle::unpickle(rest, budget)
            .map_err(|e| fail(format!("the {what} pickle at byte {pos}: {e}")))?;
        pos += p.len;
        Ok(p)
    };
    let version = next("protocol version", budget)?;
    match version.nodes.get(version.root) {
        Some(Node::Int(PROTOCOL_VERSION)) => {}
        Some(Node::Int(v)) => {
            return Err(fail(format!(
                "protocol version {v} (only {PROTOCOL_VERSION} exists)"
            )))
        }
        _ => return Err(fail("the protocol version is not an integer".into())),
    }
    let sys_info = next("sys_info", budget)?;
    check_sys_info(&sys_info).map_err(fail)?;
    let program = next("object", budget)?;
    let keys = next("storage keys", budget)?;
    let keys = key_list(&keys).map_err(fail)?;
    let storages = records(bytes, pos, &keys, &program).map_err(fail)?;
    Ok(Legacy { program, storages })
}

/// The end of the magic-number pickle (PROTO, an optional FRAME, LONG1, STOP), or `None`.
fn magic_end(bytes: &[u8]) -> Option<usize> {
    let at = long1_at(bytes)?;
    let end = at + magic_opcodes().len();
    (bytes.get(at..end)? == magic_opcodes() && bytes.get(end) == Some(&b'.')).then_some(end + 1)
}

/// The id of the value of `key` in the dict `id` of `p` (the last one, as Python keeps).
fn dict_get(p: &Unpickled, id: usize, key: &str) -> Option<usize> {
    let Some(Node::Dict(pairs)) = p.nodes.get(id) else {
        return None;
    };
    pairs.iter().rev().find_map(|&(k, v)| match p.nodes.get(k) {
        Some(Node::Str(s)) if &**s == key => Some(v),
        _ => None,
    })
}

/// `sys_info` must say little-endian; its type sizes, when given, must be torch's
/// (`short` 2, `int` 4; `long` is recorded as 4 whatever LongStorage holds, and not used).
fn check_sys_info(p: &Unpickled) -> Result<(), String> {
    if !matches!(p.nodes.get(p.root), Some(Node::Dict(_))) {
        return Err("sys_info is not a dict".into());
    }
    let value = |id: usize, key: &str| dict_get(p, id, key).and_then(|v| p.nodes.get(v));
    match value(p.root, "little_endian") {
        Some(Node::Bool(true)) => {}
        Some(Node::Bool(false)) => {
            return Err(
                "written on a big-endian machine (sys_info little_endian is False): \
                        big-endian legacy files are not supported"
                    .into(),
            )
        }
        _ => return Err("sys_info has no boolean little_endian".into()),
    }
    if let Some(sizes) = dict_get(p, p.root, "type_sizes") {
        for (name, want) in [("short", 2), ("int", 4)] {
            match value(sizes, name) {
                None => {}
                Some(Node::Int(n)) if *n == want => {}
                Some(other) => {
                    return Err(format!(
                        "sys_info type_sizes gives {name} as {other:?}, not {want}"
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The storage keys, in the order their records follow.
fn key_list(p: &Unpickled) -> Result<Vec<Rc<str>>, String> {
    let (Some(Node::List(items)) | Some(Node::Tuple(items))) = p.nodes.get(p.root) else {
        return Err("the storage keys are not a list".into());
    };
    items
        .iter()
        .map(|&id| match p.nodes.get(id) {
            Some(Node::Str(s)) => Ok(Rc::clone(s)),
            Some(Node::Int(i)) => Ok(Rc::from(i.to_string())),
            _ => Err("a storage key is neither a string nor an integer".to_string()),
        })
        .collect()
}

/// Slices each listed storage's record out of `bytes` from `pos` on. A record's element size
/// and count come from the first persistent id that names its key, as torch reads them.
fn records<'b>(
    bytes: &'b [u8],
    mut pos: usize,
    keys: &[Rc<str>],
    program: &Unpickled,
) -> Result<HashMap<Rc<str>, &'b [u8]>, String> {
    let mut first: HashMap<&str, (PtDtype, usize)> = HashMap::new();
    for node in &program.nodes {
        if let Node::Storage(s) = node {
            first.entry(&s.key).or_insert((s.dtype, s.numel));
        }
    }
    let mut out = HashMap::new();
    for key in keys {
        if out.contains_key(key) {
            return Err(format!("storage {key} is listed twice"));
        }
        let &(dtype, numel) = first
            .get(&**key)
            .ok_or_else(|| format!("storage {key} is listed but no tensor refers to it"))?;
        let count = bytes
            .get(pos..)
            .and_then(|rest| rest.get(..8))
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| {
                format!("truncated: the record of storage {key} at byte {pos} has no size")
            })?;
        pos += 8;
        if usize::try_from(count).ok() != Some(numel) {
            return Err(format!(
                "storage {key} records {count} elements but the pickle declares {numel}"
            ));
        }
        let left = bytes.len() - pos;
        let data = numel
            .checked_mul(dtype.size())
            .filter(|&n| n <= left)
            .ok_or_else(|| {
                format!(
                    "truncated: storage {key} holds {numel} {} elements but only {left} bytes \
                     are left in the file",
                    dtype.name()
                )
            })?;
        out.insert(Rc::clone(key), &bytes[pos..pos + data]);
        pos += data;
    }
    Ok(out)
}
