//! A bounded reader and writer for the data subset of Python's pickle
//! (protocols 2 to 5): what a Python client of a queue sends and receives.
//!
//! The reader understands only opcodes that build data: `None`, bools,
//! ints (64-bit), floats, `str`, `bytes`, tuples, lists, dicts, marks,
//! memo operations and frames. It never executes, imports or looks up
//! anything a pickle names: `GLOBAL`, `STACK_GLOBAL`, `INST`, `OBJ`,
//! `NEWOBJ`, `REDUCE`, `BUILD`, the extension registry, persistent ids and
//! out-of-band buffers are refused (naming the class a global names, so the
//! client learns which of its values cannot travel), as are sets and
//! bytearrays, protocols below 2, unknown opcodes and bytes after `STOP`.
//!
//! Everything is bounded before it is allocated ([`Limits`]): nesting
//! depth, the memo, the size the value expands to (a memo-reference bomb
//! is refused from its computed size, never built), int width, and every
//! length a pickle announces is checked against the bytes actually there.
//!
//! The writer emits protocol 4 with the same data opcodes, plus the few
//! exception classes a reply carries ([`PyException`]), named by module
//! and class.

use std::fmt;

use crate::py::value::Value;

/// Bounds on what [`loads`] builds from one pickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deepest nesting of containers (and of open marks).
    pub max_depth: usize,
    /// The most memo entries, and one past the largest memo index.
    pub max_memo: usize,
    /// The most bytes the decoded value may take, counting each shared
    /// (memoised) part as often as it appears in the result.
    pub max_size: usize,
    /// The most bytes that shared parts may add to the value beyond what
    /// the pickle itself builds: a small pickle that refers to one large
    /// part many times would otherwise cost its reader far more memory
    /// than it sent.
    pub max_shared: usize,
}

impl Default for Limits {
    /// Depth 1,000 (deeper than CPython's pickler reaches by default),
    /// a million memo entries, 256 MiB of expanded value, of which shared
    /// parts may add 32 MiB.
    fn default() -> Limits {
        Limits {
            max_depth: 1000,
            max_memo: 1 << 20,
            max_size: 256 << 20,
            max_shared: 32 << 20,
        }
    }
}

/// Why a pickle was refused (or a value could not be pickled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleError {
    /// A value of a type that does not travel (a set, a bytearray, a str
    /// with a lone surrogate, an unhashable dict key): Python's `TypeError`.
    Unsupported(String),
    /// Something the reader never runs: a global or class instance, object
    /// construction, an extension code, a persistent id, an out-of-band buffer.
    Refused(String),
    /// An int outside the 64-bit range.
    IntTooLarge(String),
    /// A bound of [`Limits`] was passed.
    TooLarge(String),
    /// Not a pickle of the subset: truncated, an unknown opcode, a protocol
    /// below 2, a stack or memo misuse, bytes after `STOP`.
    Malformed(String),
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleError::Unsupported(m)
            | PickleError::Refused(m)
            | PickleError::IntTooLarge(m)
            | PickleError::TooLarge(m) => f.write_str(m),
            PickleError::Malformed(m) => write!(f, "malformed pickle: {m}"),
        }
    }
}

impl std::error::Error for PickleError {}

impl From<PickleError> for crate::error::Error {
    fn from(e: PickleError) -> Self {
        crate::error::Error::Codec(e.to_string())
    }
}

type PResult<T> = Result<T, PickleError>;

fn malformed(m: impl Into<String>) -> PickleError {
    PickleError::Malformed(m.into())
}

/// What the types that travel are, for refusals.
const CARRIED: &str = "None, bool, int, float, str, bytes, tuple, list and dict";

// Opcodes (Lib/pickle.py).
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PERSID: u8 = b'P';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

// ------------------------------------------------------------------ reader

/// A node of the value being read. Containers refer to other nodes by
/// index, so that memoised objects are shared and mutated in place as
/// Python's unpickler does (a list is memoised before its items arrive).
#[derive(Debug)]
enum Node {
    Leaf(Value),
    Tuple(Vec<u32>),
    List(Vec<u32>),
    Dict(Vec<(u32, u32)>),
}

/// What one node (without its children) costs in the result.
const NODE_COST: usize = std::mem::size_of::<Value>();
const NO_ENTRY: u32 = u32::MAX;

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    nodes: Vec<Node>,
    /// Bytes the nodes take so far (bounded by `max_size`).
    cost: usize,
    stack: Vec<u32>,
    /// Stack lengths at each open mark.
    marks: Vec<usize>,
    memo: Vec<u32>,
    memo_len: usize,
}

/// Reads one pickle of the data subset into a [`Value`], within `limits`.
///
/// The whole input must be the pickle: bytes after `STOP` are refused.
pub fn loads(input: &[u8], limits: &Limits) -> PResult<Value> {
    let mut r = Reader {
        input,
        pos: 0,
        limits: *limits,
        nodes: Vec::new(),
        cost: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        memo_len: 0,
    };
    let root = r.run()?;
    if r.pos != input.len() {
        return Err(malformed(format!(
            "{} bytes after STOP",
            input.len() - r.pos
        )));
    }
    r.build(root)
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.input.len())
            .ok_or_else(|| {
                malformed(format!(
                    "truncated: {n} bytes announced at offset {}, {} there",
                    self.pos,
                    self.input.len() - self.pos.min(self.input.len())
                ))
            })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length of `n` little-endian bytes, checked against what is left.
    fn length(&mut self, n: usize) -> PResult<usize> {
        let len = match n {
            1 => u64::from(self.byte()?),
            4 => u64::from(u32::from_le_bytes(self.array()?)),
            _ => u64::from_le_bytes(self.array()?),
        };
        let left = self.input.len() - self.pos;
        if len > left as u64 {
            return Err(malformed(format!(
                "truncated: {len} bytes announced at offset {}, {left} there",
                self.pos
            )));
        }
        Ok(len as usize)
    }

    fn push(&mut self, node: Node) -> PResult<()> {
        let extra = match &node {
            Node::Leaf(Value::Str(s)) => s.len(),
            Node::Leaf(Value::Bytes(b)) => b.len(),
            _ => 0,
        };
        self.cost = self.cost.saturating_add(NODE_COST + extra);
        if self.cost > self.limits.max_size {
            return Err(PickleError::TooLarge(format!(
                "the pickle builds more than {} bytes",
                self.limits.max_size
            )));
        }
        let id = u32::try_from(self.nodes.len())
            .map_err(|_| PickleError::TooLarge("too many objects".into()))?;
        self.nodes.push(node);
        self.stack.push(id);
        Ok(())
    }

    /// Counts `bytes` more against `max_size` (a stack slot, a container's
    /// reference to an item).
    fn charge(&mut self, bytes: usize) -> PResult<()> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.limits.max_size {
            return Err(PickleError::TooLarge(format!(
                "the pickle builds more than {} bytes",
                self.limits.max_size
            )));
        }
        Ok(())
    }

    fn leaf(&mut self, v: Value) -> PResult<()> {
        self.push(Node::Leaf(v))
    }

    /// The stack length at the innermost open mark (0 when none is open).
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<u32> {
        if self.stack.len() <= self.base() {
            return Err(malformed("pop from an empty stack"));
        }
        self.stack.pop().ok_or_else(|| malformed("empty stack"))
    }

    fn top(&self) -> PResult<u32> {
        if self.stack.len() <= self.base() {
            return Err(malformed("empty stack"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| malformed("empty stack"))
    }

    /// The items pushed since the innermost mark, which is closed.
    fn pop_mark(&mut self) -> PResult<Vec<u32>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| malformed("no MARK to close"))?;
        Ok(self.stack.split_off(mark))
    }

    fn pop_n(&mut self, n: usize) -> PResult<Vec<u32>> {
        if self.stack.len() < self.base() + n {
            return Err(malformed("stack underflow"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn memo_put(&mut self, index: usize) -> PResult<()> {
        if index >= self.limits.max_memo {
            return Err(PickleError::TooLarge(format!(
                "memo index {index} (limit {})",
                self.limits.max_memo
            )));
        }
        let top = self.top()?;
        if index >= self.memo.len() {
            self.memo.resize(index + 1, NO_ENTRY);
        }
        if self.memo[index] == NO_ENTRY {
            self.memo_len += 1;
        }
        self.memo[index] = top;
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> PResult<()> {
        match self.memo.get(index) {
            Some(&id) if id != NO_ENTRY => {
                self.charge(4)?;
                self.stack.push(id);
                Ok(())
            }
            _ => Err(malformed(format!("memo entry {index} is not set"))),
        }
    }

    fn string(&mut self, len: usize) -> PResult<()> {
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|e| {
            let at = e.valid_up_to();
            // Python writes a lone surrogate as its 3-byte "surrogatepass" form.
            if bytes.get(at) == Some(&0xed) && bytes.get(at + 1).is_some_and(|b| *b >= 0xa0) {
                PickleError::Unsupported(
                    "a str with a lone surrogate cannot be stored (not valid Unicode text)".into(),
                )
            } else {
                malformed("a str that is not valid UTF-8")
            }
        })?;
        self.leaf(Value::Str(s.to_string()))
    }

    fn long(&mut self, len: usize) -> PResult<()> {
        if len > 8 {
            // Python writes ints in the fewest bytes: more than 8 is out of range.
            self.take(len)?;
            return Err(PickleError::IntTooLarge(format!(
                "an int of {len} bytes does not fit 64 bits (the server takes ints from -2**63 to 2**63-1)"
            )));
        }
        let bytes = self.take(len)?;
        let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            [0xffu8; 8]
        } else {
            [0u8; 8]
        };
        buf[..len].copy_from_slice(bytes);
        self.leaf(Value::Int(i64::from_le_bytes(buf)))
    }

    /// A `module\nname\n` pair (GLOBAL, INST), for the refusal's message.
    fn line_pair(&mut self) -> String {
        let mut parts = Vec::new();
        for _ in 0..2 {
            let rest = &self.input[self.pos..];
            let end = rest.iter().take(256).position(|b| *b == b'\n');
            match end {
                Some(e) => {
                    parts.push(String::from_utf8_lossy(&rest[..e]).into_owned());
                    self.pos += e + 1;
                }
                None => return "an unnamed class".into(),
            }
        }
        parts.join(".")
    }

    fn refuse_global(what: &str) -> PickleError {
        PickleError::Refused(format!(
            "cannot accept an instance of {what}: the server never loads a class a pickle names; it carries only {CARRIED}"
        ))
    }

    fn container(&self, id: u32) -> PResult<&Node> {
        self.nodes
            .get(id as usize)
            .ok_or_else(|| malformed("bad reference"))
    }

    fn run(&mut self) -> PResult<u32> {
        match self.input.first() {
            Some(&op::PROTO) => {}
            Some(_) => {
                return Err(malformed(
                    "protocol 0 or 1 (the server reads protocols 2 to 5)",
                ));
            }
            None => return Err(malformed("empty pickle")),
        }
        loop {
            let opcode = self.byte()?;
            match opcode {
                op::PROTO => {
                    let p = self.byte()?;
                    if !(2..=5).contains(&p) {
                        return Err(malformed(format!(
                            "protocol {p} (the server reads protocols 2 to 5)"
                        )));
                    }
                }
                op::FRAME => {
                    self.length(8)?;
                }
                op::STOP => {
                    if !self.marks.is_empty() || self.stack.len() != 1 {
                        return Err(malformed("STOP with an unbalanced stack"));
                    }
                    return self.pop();
                }
                op::NONE => self.leaf(Value::None)?,
                op::NEWTRUE => self.leaf(Value::Bool(true))?,
                op::NEWFALSE => self.leaf(Value::Bool(false))?,
                op::BININT => {
                    let i = i32::from_le_bytes(self.array()?);
                    self.leaf(Value::Int(i64::from(i)))?
                }
                op::BININT1 => {
                    let i = self.byte()?;
                    self.leaf(Value::Int(i64::from(i)))?
                }
                op::BININT2 => {
                    let i = u16::from_le_bytes(self.array()?);
                    self.leaf(Value::Int(i64::from(i)))?
                }
                op::LONG1 => {
                    let n = usize::from(self.byte()?);
                    self.long(n)?
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n =
                        usize::try_from(n).map_err(|_| malformed("LONG4 of negative length"))?;
                    if n > 8 {
                        return Err(PickleError::IntTooLarge(format!(
                            "an int of {n} bytes does not fit 64 bits (the server takes ints from -2**63 to 2**63-1)"
                        )));
                    }
                    self.long(n)?
                }
                op::BINFLOAT => {
                    let f = f64::from_be_bytes(self.array()?);
                    self.leaf(Value::Float(f))?
                }
                op::SHORT_BINUNICODE => {
                    let n = self.length(1)?;
                    self.string(n)?
                }
                op::BINUNICODE => {
                    let n = self.length(4)?;
                    self.string(n)?
                }
                op::BINUNICODE8 => {
                    let n = self.length(8)?;
                    self.string(n)?
                }
                op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 => {
                    let width = match opcode {
                        op::SHORT_BINBYTES => 1,
                        op::BINBYTES => 4,
                        _ => 8,
                    };
                    let n = self.length(width)?;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b))?
                }
                op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let items = self.pop_n(usize::from(opcode - op::TUPLE1 + 1))?;
                    self.push(Node::Tuple(items))?
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?
                }
                op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?
                }
                op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = pairs_of(&items)?;
                    self.push(Node::Dict(pairs))?
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    self.extend_dict(dict, vec![(k, v)])?
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = pairs_of(&items)?;
                    let dict = self.top()?;
                    self.extend_dict(dict, pairs)?
                }
                op::MARK => {
                    if self.marks.len() >= self.limits.max_depth {
                        return Err(PickleError::TooLarge(format!(
                            "nesting deeper than {}",
                            self.limits.max_depth
                        )));
                    }
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.stack.len() > self.base() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let top = self.top()?;
                    self.charge(4)?;
                    self.stack.push(top);
                }
                op::MEMOIZE => self.memo_put(self.memo_len)?,
                op::BINPUT => {
                    let i = usize::from(self.byte()?);
                    self.memo_put(i)?
                }
                op::LONG_BINPUT => {
                    let i = u32::from_le_bytes(self.array()?) as usize;
                    self.memo_put(i)?
                }
                op::BINGET => {
                    let i = usize::from(self.byte()?);
                    self.memo_get(i)?
                }
                op::LONG_BINGET => {
                    let i = u32::from_le_bytes(self.array()?) as usize;
                    self.memo_get(i)?
                }
                op::GLOBAL => {
                    let name = self.line_pair();
                    return Err(Self::refuse_global(&name));
                }
                op::STACK_GLOBAL => {
                    let name = self.stack_global_name();
                    return Err(Self::refuse_global(&name));
                }
                op::INST => {
                    let name = self.line_pair();
                    return Err(Self::refuse_global(&name));
                }
                op::OBJ | op::NEWOBJ | op::NEWOBJ_EX | op::REDUCE | op::BUILD => {
                    return Err(PickleError::Refused(format!(
                        "object construction (opcode {opcode:#04x}) is never run; the server carries only {CARRIED}"
                    )));
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
                    return Err(PickleError::Refused(
                        "extension registry codes are never looked up".into(),
                    ));
                }
                op::PERSID | op::BINPERSID => {
                    return Err(PickleError::Refused(
                        "persistent ids are not accepted".into(),
                    ));
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
                    return Err(PickleError::Refused(
                        "out-of-band buffers are not accepted".into(),
                    ));
                }
                op::BYTEARRAY8 => {
                    return Err(PickleError::Unsupported(format!(
                        "a bytearray cannot be stored; the server carries only {CARRIED}"
                    )));
                }
                op::EMPTY_SET | op::ADDITEMS | op::FROZENSET => {
                    return Err(PickleError::Unsupported(format!(
                        "a set cannot be stored; the server carries only {CARRIED}"
                    )));
                }
                other => {
                    return Err(malformed(format!(
                        "opcode {other:#04x} at offset {} is not one the server reads",
                        self.pos - 1
                    )));
                }
            }
        }
    }

    /// The `module.name` STACK_GLOBAL would have looked up, if its two
    /// arguments are strings.
    fn stack_global_name(&self) -> String {
        let n = self.stack.len();
        let name = |i: usize| match self
            .stack
            .get(i)
            .and_then(|id| self.nodes.get(*id as usize))
        {
            Some(Node::Leaf(Value::Str(s))) => Some(s.chars().take(200).collect::<String>()),
            _ => None,
        };
        match (
            n.checked_sub(2).and_then(name),
            n.checked_sub(1).and_then(name),
        ) {
            (Some(m), Some(c)) => format!("{m}.{c}"),
            _ => "an unnamed class".into(),
        }
    }

    fn extend_list(&mut self, list: u32, items: Vec<u32>) -> PResult<()> {
        self.charge(items.len() * 4)?;
        match self.nodes.get_mut(list as usize) {
            Some(Node::List(v)) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(malformed("APPEND to something that is not a list")),
        }
    }

    fn extend_dict(&mut self, dict: u32, pairs: Vec<(u32, u32)>) -> PResult<()> {
        self.charge(pairs.len() * 8)?;
        match self.nodes.get_mut(dict as usize) {
            Some(Node::Dict(d)) => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err(malformed("SETITEM on something that is not a dict")),
        }
    }

    /// Builds the value rooted at `root`, after checking its depth, that it
    /// contains no cycle, and the size it expands to.
    fn build(&self, root: u32) -> PResult<Value> {
        // Each node's expanded size, computed once (shared nodes are
        // counted once per appearance by their parents' sums).
        let mut sizes: Vec<usize> = vec![usize::MAX; self.nodes.len()];
        let total = self.size_of(root, 0, &mut sizes)?;
        if total > self.limits.max_size {
            return Err(PickleError::TooLarge(format!(
                "the pickle expands to more than {} bytes (shared references)",
                self.limits.max_size
            )));
        }
        // `cost` counts each part once (and more besides): what is beyond
        // it was added by sharing.
        if total.saturating_sub(self.cost) > self.limits.max_shared {
            return Err(PickleError::TooLarge(format!(
                "shared references would add more than {} bytes to the pickle's {}",
                self.limits.max_shared, self.cost
            )));
        }
        Ok(self.value_of(root))
    }

    /// Marks a node being sized (a cycle reaches it again).
    const SIZING: usize = usize::MAX - 1;

    fn size_of(&self, id: u32, depth: usize, sizes: &mut [usize]) -> PResult<usize> {
        match sizes[id as usize] {
            usize::MAX => {}
            Self::SIZING => {
                return Err(PickleError::Unsupported(
                    "a value that contains itself cannot be stored".into(),
                ));
            }
            known => return Ok(known),
        }
        if depth >= self.limits.max_depth {
            return Err(PickleError::TooLarge(format!(
                "nesting deeper than {}",
                self.limits.max_depth
            )));
        }
        sizes[id as usize] = Self::SIZING;
        let mut size = NODE_COST;
        match self.container(id)? {
            Node::Leaf(Value::Str(s)) => size += s.len(),
            Node::Leaf(Value::Bytes(b)) => size += b.len(),
            Node::Leaf(_) => {}
            Node::Tuple(items) | Node::List(items) => {
                for item in items {
                    size = size.saturating_add(self.size_of(*item, depth + 1, sizes)?);
                    if size > self.limits.max_size {
                        break;
                    }
                }
            }
            Node::Dict(pairs) => {
                for (k, v) in pairs {
                    size = size.saturating_add(self.size_of(*k, depth + 1, sizes)?);
                    size = size.saturating_add(self.size_of(*v, depth + 1, sizes)?);
                    if size > self.limits.max_size {
                        break;
                    }
                }
            }
        }
        // Stop at once: a bomb's parts are each over the limit too.
        if size > self.limits.max_size {
            return Err(PickleError::TooLarge(format!(
                "the pickle expands to more than {} bytes (shared references)",
                self.limits.max_size
            )));
        }
        sizes[id as usize] = size;
        Ok(size)
    }

    /// The value at `id` (depth and size were checked by `size_of`).
    fn value_of(&self, id: u32) -> Value {
        match &self.nodes[id as usize] {
            Node::Leaf(v) => v.clone(),
            Node::Tuple(items) => Value::Tuple(items.iter().map(|i| self.value_of(*i)).collect()),
            Node::List(items) => Value::List(items.iter().map(|i| self.value_of(*i)).collect()),
            Node::Dict(pairs) => Value::Dict(
                pairs
                    .iter()
                    .map(|(k, v)| (self.value_of(*k), self.value_of(*v)))
                    .collect(),
            ),
        }
    }
}

fn pairs_of(items: &[u32]) -> PResult<Vec<(u32, u32)>> {
    if !items.len().is_multiple_of(2) {
        return Err(malformed("a dict with an odd number of keys and values"));
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

// ------------------------------------------------------------------ writer

/// The exception classes a reply may carry, by name (never looked up here;
/// the Python client imports them, as it does from CPython's server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyExceptionKind {
    /// `queue.Empty`
    Empty,
    /// `queue.Full`
    Full,
    /// `KeyError`
    KeyError,
    /// `TypeError`
    TypeError,
    /// `AttributeError`
    AttributeError,
    /// `ValueError`
    ValueError,
    /// `OverflowError`
    OverflowError,
}

impl PyExceptionKind {
    /// The module and class name.
    pub fn path(self) -> (&'static str, &'static str) {
        match self {
            PyExceptionKind::Empty => ("queue", "Empty"),
            PyExceptionKind::Full => ("queue", "Full"),
            PyExceptionKind::KeyError => ("builtins", "KeyError"),
            PyExceptionKind::TypeError => ("builtins", "TypeError"),
            PyExceptionKind::AttributeError => ("builtins", "AttributeError"),
            PyExceptionKind::ValueError => ("builtins", "ValueError"),
            PyExceptionKind::OverflowError => ("builtins", "OverflowError"),
        }
    }
}

/// An exception instance: its class and its message (`args`), or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyException {
    /// The class.
    pub kind: PyExceptionKind,
    /// `args[0]`, if any (`queue.Empty()` has none).
    pub message: Option<String>,
}

impl PyException {
    /// `kind(message)`.
    pub fn new(kind: PyExceptionKind, message: impl Into<String>) -> PyException {
        PyException {
            kind,
            message: Some(message.into()),
        }
    }

    /// `kind()` without arguments.
    pub fn bare(kind: PyExceptionKind) -> PyException {
        PyException {
            kind,
            message: None,
        }
    }
}

/// What a reply's payload may be: a value or an exception.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A value.
    Value(&'a Value),
    /// An exception instance.
    Exception(&'a PyException),
}

/// Pickles `value` (protocol 4, data opcodes only).
///
/// A dict key Python cannot hash (a list or dict, even inside a tuple) is
/// [`PickleError::Unsupported`]; nesting deeper than the default depth
/// limit is [`PickleError::TooLarge`], so the reader accepts what this writes.
pub fn dumps(value: &Value) -> PResult<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    dumps_into(&mut out, Payload::Value(value))?;
    Ok(out)
}

/// Pickles a manager reply `(kind, payload)`, e.g. `('#RETURN', value)` or
/// `('#ERROR', queue.Empty())`, into `out` (cleared first).
pub fn dumps_reply(out: &mut Vec<u8>, kind: &str, payload: Payload<'_>) -> PResult<()> {
    out.clear();
    out.extend_from_slice(&[op::PROTO, 4]);
    write_str(out, kind);
    write_payload(out, payload, 0)?;
    out.push(op::TUPLE2);
    out.push(op::STOP);
    Ok(())
}

fn dumps_into(out: &mut Vec<u8>, payload: Payload<'_>) -> PResult<()> {
    out.clear();
    out.extend_from_slice(&[op::PROTO, 4]);
    write_payload(out, payload, 0)?;
    out.push(op::STOP);
    Ok(())
}

fn write_payload(out: &mut Vec<u8>, payload: Payload<'_>, depth: usize) -> PResult<()> {
    match payload {
        Payload::Value(v) => write_value(out, v, depth),
        Payload::Exception(e) => {
            let (module, class) = e.kind.path();
            write_str(out, module);
            write_str(out, class);
            out.push(op::STACK_GLOBAL);
            match &e.message {
                Some(m) => {
                    write_str(out, m);
                    out.push(op::TUPLE1);
                }
                None => out.push(op::EMPTY_TUPLE),
            }
            out.push(op::REDUCE);
            Ok(())
        }
    }
}

fn write_len(out: &mut Vec<u8>, short: u8, long: u8, huge: u8, len: usize) {
    if len < 256 {
        out.extend_from_slice(&[short, len as u8]);
    } else if let Ok(l) = u32::try_from(len) {
        out.push(long);
        out.extend_from_slice(&l.to_le_bytes());
    } else {
        out.push(huge);
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_len(
        out,
        op::SHORT_BINUNICODE,
        op::BINUNICODE,
        op::BINUNICODE8,
        s.len(),
    );
    out.extend_from_slice(s.as_bytes());
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if (0..256).contains(&i) {
        out.extend_from_slice(&[op::BININT1, i as u8]);
    } else if (0..65536).contains(&i) {
        out.push(op::BININT2);
        out.extend_from_slice(&(i as u16).to_le_bytes());
    } else if let Ok(small) = i32::try_from(i) {
        out.push(op::BININT);
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        // The fewest two's-complement bytes that keep the sign.
        let bytes = i.to_le_bytes();
        let mut n = 8;
        while n > 1 {
            let (top, below) = (bytes[n - 1], bytes[n - 2]);
            if (top == 0 && below & 0x80 == 0) || (top == 0xff && below & 0x80 != 0) {
                n -= 1;
            } else {
                break;
            }
        }
        out.extend_from_slice(&[op::LONG1, n as u8]);
        out.extend_from_slice(&bytes[..n]);
    }
}

/// Whether Python can hash `v` (no list or dict inside).
fn hashable(v: &Value) -> Option<&'static str> {
    match v {
        Value::List(_) => Some("list"),
        Value::Dict(_) => Some("dict"),
        Value::Tuple(items) => items.iter().find_map(hashable),
        _ => None,
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value, depth: usize) -> PResult<()> {
    if depth >= Limits::default().max_depth {
        return Err(PickleError::TooLarge(format!(
            "nesting deeper than {}",
            Limits::default().max_depth
        )));
    }
    match v {
        Value::None => out.push(op::NONE),
        Value::Bool(true) => out.push(op::NEWTRUE),
        Value::Bool(false) => out.push(op::NEWFALSE),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => {
            out.push(op::BINFLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => {
            write_len(
                out,
                op::SHORT_BINBYTES,
                op::BINBYTES,
                op::BINBYTES8,
                b.len(),
            );
            out.extend_from_slice(b);
        }
        Value::Tuple(items) => match items.len() {
            0 => out.push(op::EMPTY_TUPLE),
            n @ 1..=3 => {
                for item in items {
                    write_value(out, item, depth + 1)?;
                }
                out.push(op::TUPLE1 + (n as u8 - 1));
            }
            _ => {
                out.push(op::MARK);
                for item in items {
                    write_value(out, item, depth + 1)?;
                }
                out.push(op::TUPLE);
            }
        },
        Value::List(items) => {
            out.push(op::EMPTY_LIST);
            if !items.is_empty() {
                out.push(op::MARK);
                for item in items {
                    write_value(out, item, depth + 1)?;
                }
                out.push(op::APPENDS);
            }
        }
        Value::Dict(pairs) => {
            out.push(op::EMPTY_DICT);
            if !pairs.is_empty() {
                out.push(op::MARK);
                for (k, v) in pairs {
                    if let Some(kind) = hashable(k) {
                        return Err(PickleError::Unsupported(format!(
                            "unhashable type: '{kind}' as a dict key"
                        )));
                    }
                    write_value(out, k, depth + 1)?;
                    write_value(out, v, depth + 1)?;
                }
                out.push(op::SETITEMS);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(b: &[u8]) -> PResult<Value> {
        loads(b, &Limits::default())
    }

    /// `pickle.dumps(x, protocol=4)` from CPython 3.11, for a few values.
    #[test]
    fn reads_what_cpython_writes() {
        // {'a': [1, 2.5, None, True], 'b': (b'xy', -1, 2**40), 3: 'é'}
        let p = b"\x80\x04\x959\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88e\x8c\x01b\x94C\x02xy\x94J\xff\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x87\x94K\x03\x8c\x02\xc3\xa9\x94u.";
        let v = load(p).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::from("a"),
                    Value::List(vec![
                        Value::Int(1),
                        Value::Float(2.5),
                        Value::None,
                        Value::Bool(true)
                    ])
                ),
                (
                    Value::from("b"),
                    Value::Tuple(vec![
                        Value::bytes(&b"xy"[..]),
                        Value::Int(-1),
                        Value::Int(1 << 40)
                    ])
                ),
                (Value::Int(3), Value::from("é")),
            ])
        );
        // A shared list, memoised and referenced twice: [l, l] with l = [7].
        let shared = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94K\x07ah\x01e.";
        let l = Value::List(vec![Value::Int(7)]);
        assert_eq!(load(shared).unwrap(), Value::List(vec![l.clone(), l]));
    }

    #[test]
    fn what_it_writes_it_reads_back() {
        let v = Value::Tuple(vec![
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Int(-129),
            Value::Int(65536),
            Value::Str("x".repeat(300)),
            Value::Bytes(vec![1; 70000]),
            Value::Dict(vec![(
                Value::Tuple(vec![Value::Int(1)]),
                Value::List(vec![]),
            )]),
            Value::Float(f64::INFINITY),
        ]);
        assert_eq!(load(&dumps(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn globals_and_object_construction_are_refused_naming_the_class() {
        // pickle.dumps(os.system)-like: STACK_GLOBAL posix.system, then a call.
        let g = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94.";
        match load(g) {
            Err(PickleError::Refused(m)) => assert!(m.contains("posix.system"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Protocol 2, GLOBAL opcode.
        let g = b"\x80\x02cos\nsystem\nq\x00.";
        assert!(matches!(load(g), Err(PickleError::Refused(m)) if m.contains("os.system")));
        let inst = b"\x80\x02(X\x02\x00\x00\x00idios\nsystem\n.";
        assert!(matches!(load(inst), Err(PickleError::Refused(m)) if m.contains("os.system")));
        for op in [
            op::REDUCE,
            op::BUILD,
            op::NEWOBJ,
            op::OBJ,
            op::EXT1,
            op::BINPERSID,
            op::NEXT_BUFFER,
        ] {
            let p = [op::PROTO, 4, op::NONE, op::NONE, op, op::STOP];
            assert!(matches!(load(&p), Err(PickleError::Refused(_))), "{op:#x}");
        }
        for op in [op::EMPTY_SET, op::BYTEARRAY8] {
            let p = [op::PROTO, 5, op, 0, 0, 0, 0, 0, 0, 0, 0, op::STOP];
            assert!(
                matches!(load(&p), Err(PickleError::Unsupported(_))),
                "{op:#x}"
            );
        }
    }

    #[test]
    fn malformed_pickles_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"N.",                                             // protocol 0
            b"\x80\x01N.",                                     // protocol 1
            b"\x80\x04N.extra",                                // bytes after STOP
            b"\x80\x04N",                                      // no STOP
            b"\x80\x04X\xff\x00\x00\x00ab.",                   // length past the end
            b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", // frame past the end
            b"\x80\x04NN.",                                    // two values left
            b"\x80\x04(N.",                                    // an open mark
            b"\x80\x04h\x05.",                                 // unset memo entry
            b"\x80\x04K\x01K\x02a.",                           // APPEND to an int
            b"\x80\x04\xffN.",                                 // unknown opcode
            b"\x80\x04I1\n.",                                  // protocol-0 INT
            b"\x80\x04\x8c\x02\xff\xfe.",                      // not UTF-8
        ];
        for c in cases {
            assert!(
                matches!(load(c), Err(PickleError::Malformed(_))),
                "{c:?}: {:?}",
                load(c)
            );
        }
    }

    #[test]
    fn bounds_are_enforced_before_allocation() {
        // 100,000 nested lists.
        let mut deep = vec![op::PROTO, 4];
        deep.extend(std::iter::repeat_n(op::EMPTY_LIST, 100_000));
        deep.extend(std::iter::repeat_n(op::APPEND, 99_999));
        deep.push(op::STOP);
        assert!(matches!(load(&deep), Err(PickleError::TooLarge(m)) if m.contains("nesting")));
        // 100,000 nested marks.
        let mut marks = vec![op::PROTO, 4];
        marks.extend(std::iter::repeat_n(op::MARK, 100_000));
        assert!(matches!(load(&marks), Err(PickleError::TooLarge(_))));
        // A memo bomb: each level a list of ten references to the previous
        // one (10**29 lists once expanded), only the last left on the stack.
        let mut balanced = vec![op::PROTO, 4, op::EMPTY_LIST, op::BINPUT, 0, op::POP];
        for level in 0..30u8 {
            balanced.push(op::MARK);
            for _ in 0..10 {
                balanced.extend_from_slice(&[op::BINGET, level]);
            }
            balanced.extend_from_slice(&[op::LIST, op::BINPUT, level + 1]);
            if level < 29 {
                balanced.push(op::POP);
            }
        }
        balanced.push(op::STOP);
        assert!(
            matches!(load(&balanced), Err(PickleError::TooLarge(m)) if m.contains("expands")),
            "{:?}",
            load(&balanced).map(|_| ())
        );
        // A 10 MB LONG4: refused from its length.
        let mut long = vec![op::PROTO, 4, op::LONG4];
        long.extend_from_slice(&10_000_000i32.to_le_bytes());
        long.extend(std::iter::repeat_n(1u8, 10_000_000));
        long.push(op::STOP);
        assert!(matches!(load(&long), Err(PickleError::IntTooLarge(_))));
        // 2**63 (nine bytes) is out of range too; -2**63 is not.
        let big = b"\x80\x04\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.";
        assert!(matches!(load(big), Err(PickleError::IntTooLarge(_))));
        let min = b"\x80\x04\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.";
        assert_eq!(load(min).unwrap(), Value::Int(i64::MIN));
        // A stack of memo references (4 bytes each, nothing new built).
        let mut refs = vec![op::PROTO, 4, op::NONE, op::MEMOIZE];
        refs.extend(std::iter::repeat_n([op::BINGET, 0], 2000).flatten());
        let small = Limits {
            max_size: 4096,
            ..Limits::default()
        };
        assert!(matches!(
            loads(&refs, &small),
            Err(PickleError::TooLarge(_))
        ));
        // One 1 MiB bytes, referred to 240 times: 1 MiB sent, 240 MiB to
        // build (under max_size). Refused for what sharing adds; a few
        // references to it are fine.
        let shared = |n: usize| {
            let mut p = vec![op::PROTO, 4, op::EMPTY_LIST, op::MARK, op::BINBYTES];
            p.extend_from_slice(&(1u32 << 20).to_le_bytes());
            p.extend(std::iter::repeat_n(7u8, 1 << 20));
            p.push(op::MEMOIZE);
            p.extend(std::iter::repeat_n([op::BINGET, 0], n - 1).flatten());
            p.extend([op::APPENDS, op::STOP]);
            p
        };
        let amplified = load(&shared(240));
        assert!(
            matches!(&amplified, Err(PickleError::TooLarge(m)) if m.contains("shared")),
            "{amplified:?}"
        );
        match load(&shared(8)).unwrap() {
            Value::List(items) => assert_eq!(items.len(), 8),
            other => panic!("{other:?}"),
        }
        // A huge memo index.
        let memo = b"\x80\x04Nr\xff\xff\xff\xff.";
        assert!(matches!(load(memo), Err(PickleError::TooLarge(_))));
        // A list that contains itself.
        let cycle = b"\x80\x04]\x94h\x00a.";
        assert!(matches!(load(cycle), Err(PickleError::Unsupported(_))));
        // A lone surrogate ('\ud800' pickled with surrogatepass).
        let lone = b"\x80\x04\x8c\x03\xed\xa0\x80\x94.";
        assert!(matches!(load(lone), Err(PickleError::Unsupported(m)) if m.contains("surrogate")));
    }

    #[test]
    fn a_reply_carries_an_exception_by_name() {
        let mut out = Vec::new();
        let e = PyException::bare(PyExceptionKind::Empty);
        dumps_reply(&mut out, "#ERROR", Payload::Exception(&e)).unwrap();
        assert_eq!(
            out,
            b"\x80\x04\x8c\x06#ERROR\x8c\x05queue\x8c\x05Empty\x93)R\x86.".to_vec()
        );
        // Our own reader refuses it, as it refuses any global.
        assert!(matches!(load(&out), Err(PickleError::Refused(_))));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,20}".prop_map(Value::Str),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                prop::collection::vec((any::<i64>().prop_map(Value::Int), inner), 0..8)
                    .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_value_round_trips(v in arb_value()) {
            prop_assert_eq!(load(&dumps(&v).unwrap()).unwrap(), v);
        }

        #[test]
        fn random_and_mutated_input_never_panics(
            v in arb_value(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            noise in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut p = dumps(&v).unwrap();
            for (at, b) in flips {
                let i = at.index(p.len());
                p[i] = b;
            }
            let _ = load(&p[..cut.index(p.len() + 1)]);
            let _ = load(&p);
            let mut n = vec![op::PROTO, 4];
            n.extend(noise);
            let _ = load(&n);
        }
    }
}
