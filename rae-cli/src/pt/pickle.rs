//! The subset of the pickle virtual machine that `torch.save` state dicts need.
//!
//! Nothing is ever executed or imported: GLOBAL / STACK_GLOBAL resolve only the allow-listed
//! names in [`node::Global`] to inert markers, and REDUCE "calls" a marker by building the
//! value it stands for (an empty dict, a tensor view, a storage reference). Any other global
//! is refused at the opcode that names it, with its dotted name in the error.
//!
//! Objects live in an arena ([`Node`]s addressed by [`Id`]); the stack and the memo hold ids,
//! so memo sharing and later mutation (SETITEMS into a memoised dict) behave as in Python,
//! cycles cannot leak, and strings are shared, not copied. Every opcode consumes at least one
//! input byte per node it makes, so the arena is linear in the pickle's size; it grows
//! fallibly (running out of memory is an error), and the one thing an opcode can copy from
//! an earlier object, a tensor's sizes and strides, is charged to the file's [`Budget`].

mod build;
mod node;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::rc::Rc;

use super::budget::Budget;
use build::{Builder, Reduced};
pub(super) use node::{Global, Id, Node, StorageRef, TensorRef};

/// The machine after STOP: the arena and the id of the result.
#[derive(Debug)]
pub(in crate::pt) struct Unpickled {
    /// All objects.
    pub nodes: Vec<Node>,
    /// The value STOP returned.
    pub root: Id,
    /// Bytes of `code` read, up to and including the STOP opcode (the legacy format puts
    /// several pickles one after another).
    pub len: usize,
}

struct Machine<'a> {
    code: &'a [u8],
    budget: &'a mut Budget,
    pos: usize,
    /// Position of the opcode being run, for messages.
    op_pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

/// Runs `code` (the bytes of `data.pkl`) to its STOP, charging copies to `budget`. Errors
/// name the byte offset and the opcode or global at fault.
pub(in crate::pt) fn unpickle(code: &[u8], budget: &mut Budget) -> Result<Unpickled, String> {
    let mut m = Machine {
        code,
        budget,
        pos: 0,
        op_pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        m.op_pos = m.pos;
        let op = m
            .byte()
            .map_err(|_| "ended before its STOP opcode".to_string())?;
        let done = m
            .step(op)
            .map_err(|e| format!("at byte {}: {e}", m.op_pos))?;
        if let Some(root) = done {
            return Ok(Unpickled {
                nodes: m.nodes,
                root,
                len: m.pos,
            });
        }
    }
}

fn opcode_name(op: u8) -> String {
    let printable = if op.is_ascii_graphic() {
        format!(" '{}'", op as char)
    } else {
        String::new()
    };
    format!("0x{op:02x}{printable}")
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.code.len())
            .ok_or_else(|| format!("truncated: needs {n} more bytes at byte {}", self.pos))?;
        let s = &self.code[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self, n: u64) -> Result<usize, String> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.code.len())
            .ok_or_else(|| format!("length {n} is larger than the whole pickle"))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.code[self.pos..];
        let n = rest
            .iter()
            .take(1024)
            .position(|&b| b == b'\n')
            .ok_or("GLOBAL name without a newline within 1024 bytes")?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| "GLOBAL name is not UTF-8".to_string())?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| "string is not valid UTF-8".to_string())?;
        let s: Rc<str> = Rc::from(s);
        self.push(Node::Str(s))
    }

    /// Adds `node` to the arena and pushes it; an error, not an abort, when memory runs out.
    fn push(&mut self, node: Node) -> Result<(), String> {
        self.nodes
            .try_reserve(1)
            .map_err(|_| self.out_of_memory())?;
        self.nodes.push(node);
        self.push_id(self.nodes.len() - 1)
    }

    /// Pushes an existing object.
    fn push_id(&mut self, id: Id) -> Result<(), String> {
        self.stack
            .try_reserve(1)
            .map_err(|_| self.out_of_memory())?;
        self.stack.push(id);
        Ok(())
    }

    fn out_of_memory(&self) -> String {
        format!(
            "out of memory after {} objects and {} stack entries",
            self.nodes.len(),
            self.stack.len()
        )
    }

    fn pop(&mut self) -> Result<Id, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&self) -> Result<Id, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "stack underflow".to_string())
    }

    /// Pops everything above the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    /// REDUCE's and BINPERSID's view of the arena.
    fn builder(&mut self) -> Builder<'_> {
        Builder {
            nodes: &self.nodes,
            budget: self.budget,
        }
    }

    fn node(&self, id: Id) -> &Node {
        // Ids only come from `push`, so they are always in range.
        &self.nodes[id]
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo key {key} was never stored"))?;
        self.push_id(id)
    }

    fn int_from_le(&self, bytes: &[u8]) -> Result<i64, String> {
        if bytes.len() > 8 {
            return Err(format!(
                "integer of {} bytes does not fit in 64 bits",
                bytes.len()
            ));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xFF
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..bytes.len()].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(a))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let g = Global::resolve(module, name).ok_or_else(|| {
            format!(
                "refusing global {module}.{name}: only PyTorch tensor globals and \
                 collections.OrderedDict are allowed (nothing is executed)"
            )
        })?;
        self.push(Node::Global(g))
    }

    /// Runs one opcode; `Some(root)` at STOP.
    fn step(&mut self, op: u8) -> Result<Option<Id>, String> {
        match op {
            0x80 => {
                // PROTO
                let v = self.byte()?;
                if !(2..=5).contains(&v) {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            0x95 => {
                // FRAME: a length hint; the framed opcodes follow inline.
                self.u64()?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.push_id(top)?;
            }
            b'N' => self.push(Node::None)?,
            0x88 => self.push(Node::Bool(true))?,
            0x89 => self.push(Node::Bool(false))?,
            b'K' => {
                let v = self.byte()?;
                self.push(Node::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)))?;
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)))?;
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement.
                let n = if op == 0x8a {
                    u64::from(self.byte()?)
                } else {
                    u64::from(self.u32()?)
                };
                let n = self.len(n)?;
                let bytes = self.take(n)?.to_vec();
                let v = self.int_from_le(&bytes)?;
                self.push(Node::Int(v))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Node::Float(v))?;
            }
            b'X' => {
                let n = u64::from(self.u32()?);
                let n = self.len(n)?;
                self.string(n)?;
            }
            0x8c | b'U' => {
                // SHORT_BINUNICODE, and Python 2's SHORT_BINSTRING (read as UTF-8, as
                // torch.load does by default).
                let n = usize::from(self.byte()?);
                self.string(n)?;
            }
            b'T' => {
                // BINSTRING (Python 2): a signed 4-byte length.
                let n = i32::from_le_bytes(self.array()?);
                let n = u64::try_from(n).map_err(|_| format!("BINSTRING length {n}"))?;
                let n = self.len(n)?;
                self.string(n)?;
            }
            0x8d => {
                let n = self.u64()?;
                let n = self.len(n)?;
                self.string(n)?;
            }
            b'}' => self.push(Node::Dict(Vec::new()))?,
            b']' => self.push(Node::List(Vec::new()))?,
            b')' => self.push(Node::Tuple(Vec::new()))?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.marks.last().copied().unwrap_or(0) + n {
                    return Err(format!("stack underflow in TUPLE{n}"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(&items)?;
                self.push(Node::Dict(pairs))?;
            }
            b'q' => {
                let k = self.byte()?;
                self.memo_put(u64::from(k))?;
            }
            b'r' => {
                let k = self.u32()?;
                self.memo_put(u64::from(k))?;
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            b'h' => {
                let k = self.byte()?;
                self.memo_get(u64::from(k))?;
            }
            b'j' => {
                let k = self.u32()?;
                self.memo_get(u64::from(k))?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_extend(&[key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.dict_extend(&items)?;
            }
            b'a' => {
                let value = self.pop()?;
                self.list_extend(&[value])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_extend(&items)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.node(module), self.node(name)) {
                    (Node::Str(m), Node::Str(n)) => {
                        let (m, n) = (Rc::clone(m), Rc::clone(n));
                        self.global(&m, &n)?;
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.builder().persistent(pid)?;
                self.push(Node::Storage(storage))?;
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let value = self.builder().reduce(func, args)?;
                match value {
                    Reduced::New(node) => self.push(node)?,
                    Reduced::Existing(id) => self.push_id(id)?,
                }
            }
            b'b' => {
                let _state = self.pop()?;
                let target = self.top()?;
                // An OrderedDict state dict carries its `_metadata` attribute as BUILD
                // state; attributes are not part of the result, so it is dropped.
                if !matches!(self.node(target), Node::Dict(_)) {
                    return Err("BUILD is only supported on dicts".into());
                }
            }
            _ => {
                return Err(format!(
                    "unsupported pickle opcode {} (not needed for a state dict)",
                    opcode_name(op)
                ))
            }
        }
        Ok(None)
    }

    fn dict_extend(&mut self, items: &[Id]) -> Result<(), String> {
        let new = pairs(items)?;
        let target = self.top()?;
        match &mut self.nodes[target] {
            Node::Dict(entries) => {
                entries.extend(new);
                Ok(())
            }
            _ => Err("SETITEM(S) on something that is not a dict".into()),
        }
    }

    fn list_extend(&mut self, items: &[Id]) -> Result<(), String> {
        let target = self.top()?;
        match &mut self.nodes[target] {
            Node::List(list) => {
                list.extend_from_slice(items);
                Ok(())
            }
            _ => Err("APPEND(S) on something that is not a list".into()),
        }
    }
}

fn pairs(items: &[Id]) -> Result<Vec<(Id, Id)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}
