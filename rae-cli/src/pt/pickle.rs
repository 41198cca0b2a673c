//! The subset of the pickle virtual machine that `torch.save` state dicts need.
//!
//! Nothing is ever executed or imported: GLOBAL / STACK_GLOBAL resolve only the allow-listed
//! names below to inert markers ([`Global`]), and REDUCE "calls" a marker by building the
//! value it stands for (an empty dict, a tensor view, a storage reference). Any other global
//! is refused at the opcode that names it, with its dotted name in the error.
//!
//! Objects live in an arena ([`Node`]s addressed by [`Id`]); the stack and the memo hold ids,
//! so memo sharing and later mutation (SETITEMS into a memoised dict) behave as in Python,
//! cycles cannot leak, and every opcode consumes at least one input byte per node it makes,
//! so the machine's memory is linear in the pickle's size.

use std::collections::HashMap;

use super::PtDtype;

/// Index of a node in the arena.
pub(super) type Id = usize;

/// A callable or class a pickle may name. Everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
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
    fn resolve(module: &str, name: &str) -> Option<Global> {
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

/// A storage named by a persistent id `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StorageRef {
    /// Element type.
    pub dtype: PtDtype,
    /// The archive entry is `<prefix>/data/<key>`.
    pub key: String,
    /// Elements the storage declares.
    pub numel: usize,
}

/// A strided view of a storage (what `_rebuild_tensor_v2` describes).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TensorRef {
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
pub(super) enum Node {
    /// `None`
    None,
    /// `True` / `False`
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
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
    /// A tensor view.
    Tensor(TensorRef),
}

/// The machine after STOP: the arena and the id of the result.
#[derive(Debug)]
pub(super) struct Unpickled {
    /// All objects.
    pub nodes: Vec<Node>,
    /// The value STOP returned.
    pub root: Id,
}

struct Machine<'a> {
    code: &'a [u8],
    pos: usize,
    /// Position of the opcode being run, for messages.
    op_pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

/// Runs `code` (the bytes of `data.pkl`) to its STOP. Errors name the byte offset and
/// the opcode or global at fault.
pub(super) fn unpickle(code: &[u8]) -> Result<Unpickled, String> {
    let mut m = Machine {
        code,
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
        let s = std::str::from_utf8(bytes)
            .map_err(|_| "string is not valid UTF-8".to_string())?
            .to_string();
        self.push(Node::Str(s));
        Ok(())
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
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
        self.stack.push(id);
        Ok(())
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
        self.push(Node::Global(g));
        Ok(())
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
                self.stack.push(top);
            }
            b'N' => self.push(Node::None),
            0x88 => self.push(Node::Bool(true)),
            0x89 => self.push(Node::Bool(false)),
            b'K' => {
                let v = self.byte()?;
                self.push(Node::Int(i64::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)));
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
                self.push(Node::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Node::Float(v));
            }
            b'X' => {
                let n = u64::from(self.u32()?);
                let n = self.len(n)?;
                self.string(n)?;
            }
            0x8c => {
                let n = usize::from(self.byte()?);
                self.string(n)?;
            }
            0x8d => {
                let n = self.u64()?;
                let n = self.len(n)?;
                self.string(n)?;
            }
            b'}' => self.push(Node::Dict(Vec::new())),
            b']' => self.push(Node::List(Vec::new())),
            b')' => self.push(Node::Tuple(Vec::new())),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.marks.last().copied().unwrap_or(0) + n {
                    return Err(format!("stack underflow in TUPLE{n}"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items));
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Node::List(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(&items)?;
                self.push(Node::Dict(pairs));
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
                        let (m, n) = (m.clone(), n.clone());
                        self.global(&m, &n)?;
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent(pid)?;
                self.push(Node::Storage(storage));
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let value = self.reduce(func, args)?;
                match value {
                    Reduced::New(node) => self.push(node),
                    Reduced::Existing(id) => self.stack.push(id),
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

    /// `('storage', torch.XStorage, key, location, numel)`.
    fn persistent(&self, pid: Id) -> Result<StorageRef, String> {
        let bad = || {
            "persistent id is not ('storage', torch.<X>Storage, key, location, numel)".to_string()
        };
        let Node::Tuple(items) = self.node(pid) else {
            return Err(bad());
        };
        let [kind, ty, key, _location, numel] = items.as_slice() else {
            return Err(bad());
        };
        if !matches!(self.node(*kind), Node::Str(s) if s == "storage") {
            return Err(bad());
        }
        let Node::Global(Global::Storage(dtype)) = self.node(*ty) else {
            return Err(bad());
        };
        let key = match self.node(*key) {
            Node::Str(s) => s.clone(),
            Node::Int(i) => i.to_string(),
            _ => return Err(bad()),
        };
        if key.is_empty() || key.contains('/') || key.contains('\\') || key.contains("..") {
            return Err(format!("storage key {key:?} is not a plain name"));
        }
        let numel = self.usize_of(*numel, "storage size")?;
        Ok(StorageRef {
            dtype: *dtype,
            key,
            numel,
        })
    }

    fn usize_of(&self, id: Id, what: &str) -> Result<usize, String> {
        match self.node(id) {
            Node::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
            _ => Err(format!("{what} is not an integer")),
        }
    }

    fn usizes_of(&self, id: Id, what: &str) -> Result<Vec<usize>, String> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => {
                items.iter().map(|&i| self.usize_of(i, what)).collect()
            }
            _ => Err(format!("{what} is not a tuple")),
        }
    }

    fn reduce(&mut self, func: Id, args: Id) -> Result<Reduced, String> {
        let Node::Global(g) = *self.node(func) else {
            return Err("REDUCE on something that is not an allowed global".into());
        };
        let Node::Tuple(args) = self.node(args) else {
            return Err("REDUCE arguments are not a tuple".into());
        };
        let args = args.clone();
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return Err("collections.OrderedDict called with arguments".into());
                }
                Ok(Reduced::New(Node::Dict(Vec::new())))
            }
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
                Ok(Reduced::New(Node::Tensor(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                })))
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

/// What REDUCE pushes: a new object, or one that exists already.
enum Reduced {
    New(Node),
    Existing(Id),
}

fn pairs(items: &[Id]) -> Result<Vec<(Id, Id)>, String> {
    if items.len() % 2 != 0 {
        return Err("odd number of items for a dict".into());
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(code: &[u8]) -> Result<(Vec<Node>, Node), String> {
        let u = unpickle(code)?;
        let root = u.nodes[u.root].clone();
        Ok((u.nodes, root))
    }

    #[test]
    fn integers_of_every_width() {
        // LONG1 of -2 (0xFE), BININT -5, BININT2 65535, BININT1 200, LONG1 2^63-1.
        let mut code = vec![0x80, 2, b'('];
        code.extend([0x8a, 1, 0xFE]);
        code.push(b'J');
        code.extend((-5i32).to_le_bytes());
        code.extend([b'M', 0xFF, 0xFF, b'K', 200]);
        code.extend([0x8a, 8]);
        code.extend(i64::MAX.to_le_bytes());
        code.extend([0x8a, 0]); // LONG1 of zero length is 0
        code.extend([b'l', b'.']);
        let (nodes, root) = run(&code).unwrap();
        let Node::List(items) = root else {
            panic!("not a list")
        };
        let ints: Vec<_> = items.iter().map(|&i| nodes[i].clone()).collect();
        assert_eq!(
            ints,
            vec![
                Node::Int(-2),
                Node::Int(-5),
                Node::Int(65535),
                Node::Int(200),
                Node::Int(i64::MAX),
                Node::Int(0)
            ]
        );
    }

    #[test]
    fn long_wider_than_64_bits_is_refused() {
        let mut code = vec![0x80, 2, 0x8a, 9];
        code.extend([1u8; 9]);
        code.push(b'.');
        let err = unpickle(&code).unwrap_err();
        assert!(err.contains("64 bits"), "{err}");
    }

    #[test]
    fn binfloat_is_big_endian() {
        let mut code = vec![0x80, 2, b'G'];
        code.extend(1.5f64.to_be_bytes());
        code.push(b'.');
        assert_eq!(run(&code).unwrap().1, Node::Float(1.5));
    }

    #[test]
    fn memo_shares_the_mutated_dict() {
        // d = {}; memo[0] = d; l = [d, d]; d['k'] = 1  -> both list items are the same dict.
        let code = [
            0x80, 2, b'}', b'q', 0, b']', b'h', 0, b'a', b'h', 0, b'a', b'h', 0, 0x8c, 1, b'k',
            b'K', 1, b's', b'0', b'.',
        ];
        let (nodes, root) = run(&code).unwrap();
        let Node::List(items) = root else {
            panic!("not a list")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
        let Node::Dict(pairs) = &nodes[items[0]] else {
            panic!("not a dict")
        };
        assert_eq!(pairs.len(), 1);
        assert_eq!(nodes[pairs[0].1], Node::Int(1));
    }

    #[test]
    fn refuses_unlisted_globals_by_name() {
        let err = unpickle(b"\x80\x02cbuiltins\neval\n.").unwrap_err();
        assert!(err.contains("builtins.eval"), "{err}");
        let err = unpickle(b"\x80\x04\x8c\x05posix\x8c\x06system\x93.").unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
        // A storage class is allowed as a name but is not callable.
        let err = unpickle(b"\x80\x02ctorch\nFloatStorage\n)R.").unwrap_err();
        assert!(err.contains("persistent id"), "{err}");
    }

    #[test]
    fn malformed_programs_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "STOP"),
            (b"\x80\x02", "STOP"),
            (b"\x80\x02.", "underflow"),
            (b"\x80\x02h\x07.", "memo key 7"),
            (b"\x80\x02K\x01s.", "underflow"),
            (b"\x80\x02(K\x01\x86.", "underflow"),
            (b"\x80\x02K\x00K\x01K\x02s.", "not a dict"),
            (b"\x80\x02t.", "MARK"),
            (
                b"\x80\x02X\xff\xff\xff\x7f.",
                "larger than the whole pickle",
            ),
            (b"\x80\x02X\x05\x00\x00\x00ab", "truncated"),
            (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "UTF-8"),
            (b"\x80\x02I12\n.", "unsupported pickle opcode 0x49 'I'"),
            (b"\x80\x09N.", "protocol 9"),
            (b"\x80\x02NN\x81.", "unsupported pickle opcode 0x81"),
            (b"\x80\x02N)R.", "not an allowed global"),
            (b"\x80\x02K\x01}b.", "BUILD"),
        ];
        for (code, needle) in cases {
            let err = unpickle(code).unwrap_err();
            assert!(err.contains(needle), "{code:?}: {err}");
        }
    }

    #[test]
    fn persistent_ids_must_name_plain_storage_keys() {
        let pid = |key: &str| {
            let mut c = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
            c.push(0x8c);
            c.push(key.len() as u8);
            c.extend(key.as_bytes());
            c.extend(b"\x8c\x03cpuK\x04tQ.");
            c
        };
        let (_, root) = run(&pid("0")).unwrap();
        assert_eq!(
            root,
            Node::Storage(StorageRef {
                dtype: PtDtype::F32,
                key: "0".into(),
                numel: 4
            })
        );
        for bad in ["../x", "a/b", ""] {
            assert!(unpickle(&pid(bad)).is_err(), "{bad}");
        }
    }
}
