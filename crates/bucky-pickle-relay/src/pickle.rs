//! A safe decoder for the pickles Graphite senders produce, and nothing else.
//!
//! carbon's pickle protocol carries `[(path, (timestamp, value)), …]`: a list of tuples of strings and
//! numbers. This module decodes exactly that family of shapes from pickle protocols 0 to 5 (carbon itself
//! sends protocol 2; Python 2 senders use 0–2 with `STRING` opcodes; Python 3 senders may use 3–5). It
//! never imports, calls or constructs anything: opcodes that name a global, call a callable, build an
//! object or make a dict or set (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`,
//! `EMPTY_DICT`, …) are refused, and so is any opcode this module does not know.
//!
//! Work and memory are bounded by the frame: every opcode creates at most one value, memo indices may not
//! exceed the frame length, marks and nesting are capped at [`Limits`], and a decoded pickle borrows its
//! strings from the frame instead of copying them (except protocol 0/`STRING` escapes, which are decoded
//! into one scratch buffer).
//!
//! ```
//! use bucky_pickle_relay::pickle::{Decoder, Number};
//!
//! // pickle.dumps([("a.b", (1700000000, 1.5))], protocol=2)
//! let frame = b"\x80\x02]q\x00X\x03\x00\x00\x00a.bq\x01J\x00\xf1SeG?\xf8\x00\x00\x00\x00\x00\x00\x86q\x02\x86q\x03a.";
//! let mut decoder = Decoder::default();
//! let pickle = decoder.decode(frame)?;
//! let metrics: Vec<_> = pickle.metrics().collect::<Result<_, _>>().unwrap();
//! assert_eq!(metrics[0].path, b"a.b");
//! assert_eq!(metrics[0].timestamp, Number::Int(1_700_000_000));
//! assert_eq!(metrics[0].value, Number::Float(1.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

/// Bounds on one pickle's structure (its byte length is bounded by the frame limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and tuples accepted (carbon's shape is 3 deep).
    pub max_depth: u8,
    /// Most `MARK`s open at once (carbon's shape needs at most 3).
    pub max_marks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 32, max_marks: 32 }
    }
}

/// Why a pickle was refused as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An opcode outside the safe subset (globals, calls, objects, dicts, sets, …).
    #[error(
        "opcode {name} ({opcode:#04x}) at byte {offset} is refused: a carbon pickle holds only lists, tuples, strings and numbers"
    )]
    Refused {
        /// The opcode byte.
        opcode: u8,
        /// Its name in CPython's `pickletools`.
        name: &'static str,
        /// Where it was.
        offset: usize,
    },
    /// A byte that is not a pickle opcode at all (not a pickle, or a framing error).
    #[error("byte {opcode:#04x} at offset {offset} is not a pickle opcode; is the sender speaking pickle?")]
    Unknown {
        /// The byte.
        opcode: u8,
        /// Where it was.
        offset: usize,
    },
    /// The frame ends in the middle of an opcode's argument.
    #[error("the pickle ends inside the argument of {what} at byte {offset}")]
    Truncated {
        /// The opcode whose argument is cut.
        what: &'static str,
        /// Where that opcode started.
        offset: usize,
    },
    /// An argument that does not parse (a bad number, an unquoted string, a bad escape, …).
    #[error("malformed {what} at byte {offset}")]
    Malformed {
        /// What was expected.
        what: &'static str,
        /// Where the opcode started.
        offset: usize,
    },
    /// An opcode found fewer values (or not the kind of value) it needs on the stack.
    #[error("{what} at byte {offset} finds no suitable value on the stack")]
    Stack {
        /// The opcode.
        what: &'static str,
        /// Where it was.
        offset: usize,
    },
    /// Lists and tuples nested, or marks opened, deeper than [`Limits`] allow.
    #[error("nesting deeper than {limit} at byte {offset}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where it was exceeded.
        offset: usize,
    },
    /// A memo index that was never stored or lies beyond what the frame could hold.
    #[error("memo index {index} at byte {offset} is out of bounds or unset")]
    Memo {
        /// The index.
        index: u64,
        /// Where it was used.
        offset: usize,
    },
    /// A `PROTO` above 5.
    #[error("pickle protocol {0} is not supported (0 to 5 are)")]
    Protocol(u8),
    /// The frame has no `STOP` opcode.
    #[error("the pickle ends without STOP")]
    NoStop,
    /// Bytes follow `STOP` inside the frame (a framing mismatch).
    #[error("{0} bytes follow STOP inside the frame")]
    Trailing(usize),
    /// `STOP` leaves the stack in a state no pickler produces.
    #[error("STOP leaves {values} values and {marks} marks on the stack instead of one value")]
    Leftover {
        /// Values on the stack.
        values: usize,
        /// Open marks.
        marks: usize,
    },
    /// The pickled object is not a list (or tuple) of metrics.
    #[error("the pickled object is {0}, not a list of (path, (timestamp, value))")]
    NotAList(&'static str),
}

/// A number as Python's `float()` would see it: integers are kept exact so they can be written exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer (or bool) that fits in 64 bits.
    Int(i64),
    /// A float, a numeric string, or an integer too large for 64 bits (rounded as Python rounds it).
    Float(f64),
}

impl Number {
    /// The value as Python's `float()` returns it (correctly rounded).
    pub fn as_f64(self) -> f64 {
        match self {
            // Correctly rounded (ties to even), as CPython's int.__float__.
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// Why one metric of an otherwise good pickle was skipped (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// The item is not a `(path, (timestamp, value))` pair.
    Shape,
    /// The path is not a string.
    PathNotString,
    /// The path is empty, too long, not UTF-8, or holds whitespace or control characters (which the
    /// plaintext protocol cannot carry).
    BadPath,
    /// The timestamp is not a number (`float()` would fail), or is NaN or infinite.
    TimestampNotNumber,
    /// The value is not a number (`float()` would fail).
    ValueNotNumber,
    /// The value is NaN, which carbon drops on receipt.
    NaN,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::Shape => "item is not (path, (timestamp, value))",
            Skip::PathNotString => "path is not a string",
            Skip::BadPath => "path is empty, too long, not UTF-8, or holds whitespace/control characters",
            Skip::TimestampNotNumber => "timestamp is not a finite number",
            Skip::ValueNotNumber => "value is not a number",
            Skip::NaN => "value is NaN",
        })
    }
}

/// One metric of a decoded pickle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    /// The metric path, as bytes (not yet validated; see [`crate::line`]).
    pub path: &'a [u8],
    /// The timestamp.
    pub timestamp: Number,
    /// The value.
    pub value: Number,
}

/// A value on the decoder's stack: scalars inline, containers as indices into the decoder's pools.
#[derive(Debug, Clone, Copy)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An integer beyond 64 bits, rounded to f64 (infinite when Python's `float()` would overflow).
    BigInt(f64),
    /// A string: `owned` ones live in the scratch buffer, the others in the frame.
    Str {
        start: u32,
        len: u32,
        owned: bool,
    },
    Tuple {
        start: u32,
        len: u32,
        depth: u8,
    },
    List(u32),
    /// A memo slot never written.
    Unset,
}

impl Val {
    fn kind(self) -> &'static str {
        match self {
            Val::None => "None",
            Val::Bool(_) => "a bool",
            Val::Int(_) | Val::BigInt(_) => "an int",
            Val::Float(_) => "a float",
            Val::Str { .. } => "a string",
            Val::Tuple { .. } => "a tuple",
            Val::List(_) => "a list",
            Val::Unset => "nothing",
        }
    }
}

#[derive(Debug, Default)]
struct ListData {
    items: Vec<Val>,
    depth: u8,
}

/// A reusable pickle decoder; keeps its buffers between frames.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: Vec<Val>,
    tuples: Vec<Val>,
    lists: Vec<ListData>,
    owned: Vec<u8>,
}

/// A decoded pickle: the metrics it holds, borrowed from the frame and the decoder.
#[derive(Debug)]
pub struct Pickle<'d> {
    dec: &'d Decoder,
    frame: &'d [u8],
    items: &'d [Val],
}

// Opcodes (CPython Lib/pickle.py).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const INT: u8 = b'I';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const LONG: u8 = b'L';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const STRING: u8 = b'S';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const UNICODE: u8 = b'V';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const GET: u8 = b'g';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const PUT: u8 = b'p';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const FLOAT: u8 = b'F';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;

/// Names of the opcodes we refuse, for the log.
fn refused_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        b'b' => "BUILD",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        b'}' => "EMPTY_DICT",
        b'd' => "DICT",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str, offset: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() - self.pos < n {
            return Err(DecodeError::Truncated { what, offset });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str, offset: usize) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what, offset)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A protocol-0 argument: the bytes up to (not including) the next newline.
    fn line(&mut self, what: &'static str, offset: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or(DecodeError::Truncated { what, offset })?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    /// A length prefix that must fit in what is left of the frame.
    fn len_arg(&mut self, len: u64, what: &'static str, offset: usize) -> Result<usize, DecodeError> {
        if len > (self.data.len() - self.pos) as u64 {
            return Err(DecodeError::Truncated { what, offset });
        }
        Ok(len as usize)
    }
}

impl Decoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> Self {
        Decoder { limits, ..Decoder::default() }
    }

    /// Releases buffers grown beyond `bytes` by an unusually large pickle (keeps memory bounded when
    /// decoders are kept per thread or per connection).
    pub fn shrink_to(&mut self, bytes: usize) {
        fn shrink<T>(v: &mut Vec<T>, bytes: usize) {
            let n = bytes / std::mem::size_of::<T>().max(1);
            if v.capacity() > n {
                v.clear();
                v.shrink_to(n);
            }
        }
        shrink(&mut self.stack, bytes);
        shrink(&mut self.memo, bytes);
        shrink(&mut self.tuples, bytes);
        shrink(&mut self.owned, bytes);
        if self.lists.iter().map(|l| l.items.capacity()).sum::<usize>() * std::mem::size_of::<Val>() > bytes {
            self.lists = Vec::new();
        }
    }

    fn avail(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    fn need(&self, n: usize, what: &'static str, offset: usize) -> Result<(), DecodeError> {
        if self.avail() < n {
            return Err(DecodeError::Stack { what, offset });
        }
        Ok(())
    }

    fn depth(&self, v: Val) -> u8 {
        match v {
            Val::Tuple { depth, .. } => depth,
            Val::List(i) => self.lists[i as usize].depth,
            _ => 0,
        }
    }

    fn container_depth(&self, items: &[Val], offset: usize) -> Result<u8, DecodeError> {
        let inner = items.iter().map(|&v| self.depth(v)).max().unwrap_or(0);
        if inner >= self.limits.max_depth {
            return Err(DecodeError::TooDeep { limit: self.limits.max_depth.into(), offset });
        }
        Ok(inner + 1)
    }

    /// Turns the top `n` values into a tuple.
    fn make_tuple(&mut self, from: usize, offset: usize) -> Result<(), DecodeError> {
        let depth = self.container_depth(&self.stack[from..], offset)?;
        let start = self.tuples.len();
        self.tuples.extend_from_slice(&self.stack[from..]);
        let len = self.tuples.len() - start;
        self.stack.truncate(from);
        self.stack.push(Val::Tuple { start: start as u32, len: len as u32, depth });
        Ok(())
    }

    fn pop_mark(&mut self, what: &'static str, offset: usize) -> Result<usize, DecodeError> {
        self.marks.pop().ok_or(DecodeError::Stack { what, offset })
    }

    /// Appends `stack[from..]` to the list just below `from`.
    fn append_to_list(&mut self, from: usize, what: &'static str, offset: usize) -> Result<(), DecodeError> {
        let Some(&Val::List(li)) = from.checked_sub(1).and_then(|i| self.stack.get(i)) else {
            return Err(DecodeError::Stack { what, offset });
        };
        let depth = self.container_depth(&self.stack[from..], offset)?;
        let list = &mut self.lists[li as usize];
        list.items.extend_from_slice(&self.stack[from..]);
        list.depth = list.depth.max(depth);
        self.stack.truncate(from);
        Ok(())
    }

    fn memo_put(&mut self, index: u64, frame_len: usize, offset: usize) -> Result<(), DecodeError> {
        // A frame of N bytes cannot hold N puts: a larger index is hostile (or corrupt).
        if index > frame_len as u64 {
            return Err(DecodeError::Memo { index, offset });
        }
        let &top = self.stack.last().filter(|_| self.avail() > 0).ok_or(DecodeError::Stack { what: "PUT", offset })?;
        let i = index as usize;
        if i >= self.memo.len() {
            self.memo.resize(i + 1, Val::Unset);
        }
        self.memo[i] = top;
        Ok(())
    }

    fn memo_get(&mut self, index: u64, offset: usize) -> Result<(), DecodeError> {
        match self.memo.get(index as usize) {
            Some(&v) if !matches!(v, Val::Unset) && index <= usize::MAX as u64 => {
                self.stack.push(v);
                Ok(())
            }
            _ => Err(DecodeError::Memo { index, offset }),
        }
    }

    fn push_str(&mut self, start: usize, len: usize) {
        self.stack.push(Val::Str { start: start as u32, len: len as u32, owned: false });
    }

    fn push_owned(&mut self, start: usize) {
        let len = self.owned.len() - start;
        self.stack.push(Val::Str { start: start as u32, len: len as u32, owned: true });
    }

    /// Decodes one frame (the bytes after carbon's 4-byte length prefix).
    pub fn decode<'d>(&'d mut self, frame: &'d [u8]) -> Result<Pickle<'d>, DecodeError> {
        // Offsets and lengths are stored as u32; frames beyond 4 GiB are refused before reaching here.
        assert!(frame.len() <= u32::MAX as usize, "frame larger than 4 GiB");
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        self.tuples.clear();
        self.lists.clear();
        self.owned.clear();
        let mut r = Reader { data: frame, pos: 0 };
        loop {
            let offset = r.pos;
            let Some(&op) = frame.get(r.pos) else {
                return Err(DecodeError::NoStop);
            };
            r.pos += 1;
            match op {
                PROTO => {
                    let [v] = r.array::<1>("PROTO", offset)?;
                    if v > 5 {
                        return Err(DecodeError::Protocol(v));
                    }
                }
                FRAME => {
                    let n = u64::from_le_bytes(r.array("FRAME", offset)?);
                    r.len_arg(n, "FRAME", offset)?;
                }
                STOP => break,
                MARK => {
                    if self.marks.len() >= self.limits.max_marks {
                        return Err(DecodeError::TooDeep { limit: self.limits.max_marks, offset });
                    }
                    self.marks.push(self.stack.len());
                }
                EMPTY_LIST => {
                    self.lists.push(ListData { items: Vec::new(), depth: 1 });
                    self.stack.push(Val::List((self.lists.len() - 1) as u32));
                }
                EMPTY_TUPLE => self.stack.push(Val::Tuple { start: 0, len: 0, depth: 1 }),
                APPEND => {
                    self.need(2, "APPEND", offset)?;
                    self.append_to_list(self.stack.len() - 1, "APPEND", offset)?;
                }
                APPENDS => {
                    let from = self.pop_mark("APPENDS", offset)?;
                    if self.avail() == 0 {
                        return Err(DecodeError::Stack { what: "APPENDS", offset });
                    }
                    self.append_to_list(from, "APPENDS", offset)?;
                }
                LIST => {
                    let from = self.pop_mark("LIST", offset)?;
                    let depth = self.container_depth(&self.stack[from..], offset)?;
                    let items = self.stack.split_off(from);
                    self.lists.push(ListData { items, depth });
                    self.stack.push(Val::List((self.lists.len() - 1) as u32));
                }
                TUPLE => {
                    let from = self.pop_mark("TUPLE", offset)?;
                    self.make_tuple(from, offset)?;
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1 + 1);
                    self.need(n, "TUPLEn", offset)?;
                    self.make_tuple(self.stack.len() - n, offset)?;
                }
                NONE => self.stack.push(Val::None),
                NEWTRUE => self.stack.push(Val::Bool(true)),
                NEWFALSE => self.stack.push(Val::Bool(false)),
                BININT => self.stack.push(Val::Int(i32::from_le_bytes(r.array("BININT", offset)?).into())),
                BININT1 => self.stack.push(Val::Int(r.array::<1>("BININT1", offset)?[0].into())),
                BININT2 => self.stack.push(Val::Int(u16::from_le_bytes(r.array("BININT2", offset)?).into())),
                LONG1 => {
                    let [n] = r.array::<1>("LONG1", offset)?;
                    let bytes = r.take(n.into(), "LONG1", offset)?;
                    self.stack.push(int_from_le(bytes));
                }
                LONG4 => {
                    let n = i32::from_le_bytes(r.array("LONG4", offset)?);
                    let n = u64::try_from(n).map_err(|_| DecodeError::Malformed { what: "LONG4 length", offset })?;
                    let n = r.len_arg(n, "LONG4", offset)?;
                    let bytes = r.take(n, "LONG4", offset)?;
                    self.stack.push(int_from_le(bytes));
                }
                INT => {
                    let line = r.line("INT", offset)?;
                    let v = match line {
                        b"00" => Val::Bool(false),
                        b"01" => Val::Bool(true),
                        _ => int_from_text(line).ok_or(DecodeError::Malformed { what: "INT", offset })?,
                    };
                    self.stack.push(v);
                }
                LONG => {
                    let line = r.line("LONG", offset)?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    self.stack.push(int_from_text(digits).ok_or(DecodeError::Malformed { what: "LONG", offset })?);
                }
                FLOAT => {
                    let line = r.line("FLOAT", offset)?;
                    let v = python_float(line).ok_or(DecodeError::Malformed { what: "FLOAT", offset })?;
                    self.stack.push(Val::Float(v));
                }
                BINFLOAT => self.stack.push(Val::Float(f64::from_be_bytes(r.array("BINFLOAT", offset)?))),
                SHORT_BINUNICODE | SHORT_BINSTRING | SHORT_BINBYTES => {
                    let [n] = r.array::<1>("SHORT_BINUNICODE", offset)?;
                    r.take(n.into(), "SHORT_BINUNICODE", offset)?;
                    self.push_str(r.pos - usize::from(n), n.into());
                }
                BINUNICODE | BINBYTES => {
                    let n = u32::from_le_bytes(r.array("BINUNICODE", offset)?);
                    let n = r.len_arg(n.into(), "BINUNICODE", offset)?;
                    self.push_str(r.pos, n);
                    r.pos += n;
                }
                BINSTRING => {
                    let n = i32::from_le_bytes(r.array("BINSTRING", offset)?);
                    let n =
                        u64::try_from(n).map_err(|_| DecodeError::Malformed { what: "BINSTRING length", offset })?;
                    let n = r.len_arg(n, "BINSTRING", offset)?;
                    self.push_str(r.pos, n);
                    r.pos += n;
                }
                BINUNICODE8 | BINBYTES8 => {
                    let n = u64::from_le_bytes(r.array("BINUNICODE8", offset)?);
                    let n = r.len_arg(n, "BINUNICODE8", offset)?;
                    self.push_str(r.pos, n);
                    r.pos += n;
                }
                UNICODE => {
                    let line = r.line("UNICODE", offset)?;
                    let start = self.owned.len();
                    raw_unicode_escape(line, &mut self.owned)
                        .ok_or(DecodeError::Malformed { what: "UNICODE escape", offset })?;
                    self.push_owned(start);
                }
                STRING => {
                    let line = r.line("STRING", offset)?;
                    let quoted = match line {
                        [q @ (b'\'' | b'"'), inner @ .., last] if q == last => inner,
                        _ => return Err(DecodeError::Malformed { what: "STRING (must be quoted)", offset }),
                    };
                    let start = self.owned.len();
                    escape_decode(quoted, &mut self.owned)
                        .ok_or(DecodeError::Malformed { what: "STRING escape", offset })?;
                    self.push_owned(start);
                }
                PUT => {
                    let i = decimal(r.line("PUT", offset)?).ok_or(DecodeError::Malformed { what: "PUT", offset })?;
                    self.memo_put(i, frame.len(), offset)?;
                }
                BINPUT => {
                    let [i] = r.array::<1>("BINPUT", offset)?;
                    self.memo_put(i.into(), frame.len(), offset)?;
                }
                LONG_BINPUT => {
                    let i = u32::from_le_bytes(r.array("LONG_BINPUT", offset)?);
                    self.memo_put(i.into(), frame.len(), offset)?;
                }
                MEMOIZE => self.memo_put(self.memo.len() as u64, frame.len(), offset)?,
                GET => {
                    let i = decimal(r.line("GET", offset)?).ok_or(DecodeError::Malformed { what: "GET", offset })?;
                    self.memo_get(i, offset)?;
                }
                BINGET => {
                    let [i] = r.array::<1>("BINGET", offset)?;
                    self.memo_get(i.into(), offset)?;
                }
                LONG_BINGET => {
                    let i = u32::from_le_bytes(r.array("LONG_BINGET", offset)?);
                    self.memo_get(i.into(), offset)?;
                }
                _ => {
                    return Err(match refused_name(op) {
                        Some(name) => DecodeError::Refused { opcode: op, name, offset },
                        None => DecodeError::Unknown { opcode: op, offset },
                    })
                }
            }
        }
        if r.pos != frame.len() {
            return Err(DecodeError::Trailing(frame.len() - r.pos));
        }
        if self.stack.len() != 1 || !self.marks.is_empty() {
            return Err(DecodeError::Leftover { values: self.stack.len(), marks: self.marks.len() });
        }
        let items: &[Val] = match self.stack[0] {
            Val::List(i) => &self.lists[i as usize].items,
            Val::Tuple { start, len, .. } => &self.tuples[start as usize..(start + len) as usize],
            other => return Err(DecodeError::NotAList(other.kind())),
        };
        Ok(Pickle { dec: self, frame, items })
    }
}

impl<'d> Pickle<'d> {
    /// Number of items in the top-level list.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The metrics, in order; an item that is not a metric yields the reason it is skipped.
    pub fn metrics(&self) -> impl Iterator<Item = Result<Metric<'d>, Skip>> + '_ {
        self.items.iter().map(|&item| self.metric(item))
    }

    fn pair(&self, v: Val) -> Option<(Val, Val)> {
        let d = self.dec;
        match v {
            Val::Tuple { start, len: 2, .. } => Some((d.tuples[start as usize], d.tuples[start as usize + 1])),
            Val::List(i) => match d.lists[i as usize].items[..] {
                [a, b] => Some((a, b)),
                _ => None,
            },
            _ => None,
        }
    }

    fn bytes(&self, v: Val) -> Option<&'d [u8]> {
        match v {
            Val::Str { start, len, owned } => {
                let src: &'d [u8] = if owned { &self.dec.owned } else { self.frame };
                Some(&src[start as usize..(start + len) as usize])
            }
            _ => None,
        }
    }

    /// Python's `float(x)` for the values a pickle can hold (None, containers and overflowing ints fail).
    fn number(&self, v: Val) -> Option<Number> {
        match v {
            Val::Int(i) => Some(Number::Int(i)),
            Val::Bool(b) => Some(Number::Int(b.into())),
            Val::Float(f) => Some(Number::Float(f)),
            Val::BigInt(f) if f.is_finite() => Some(Number::Float(f)),
            Val::Str { .. } => self.bytes(v).and_then(python_float).map(Number::Float),
            _ => None,
        }
    }

    fn metric(&self, item: Val) -> Result<Metric<'d>, Skip> {
        let (path, point) = self.pair(item).ok_or(Skip::Shape)?;
        let (ts, value) = self.pair(point).ok_or(Skip::Shape)?;
        let path = self.bytes(path).ok_or(Skip::PathNotString)?;
        let timestamp = self.number(ts).ok_or(Skip::TimestampNotNumber)?;
        let value = self.number(value).ok_or(Skip::ValueNotNumber)?;
        Ok(Metric { path, timestamp, value })
    }
}

/// A little-endian two's-complement integer (LONG1/LONG4), rounded to f64 beyond 64 bits.
fn int_from_le(bytes: &[u8]) -> Val {
    if bytes.len() <= 8 {
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..bytes.len()].copy_from_slice(bytes);
        return Val::Int(i64::from_le_bytes(a));
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag = bytes.to_vec();
    if negative {
        // Two's complement negation: invert, add one.
        let mut carry = true;
        for b in &mut mag {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let f = magnitude_to_f64(&mag);
    Val::BigInt(if negative { -f } else { f })
}

/// Correctly rounded (ties to even) conversion of a little-endian magnitude; infinite beyond f64's range.
fn magnitude_to_f64(mag: &[u8]) -> f64 {
    let Some(top) = mag.iter().rposition(|&b| b != 0) else {
        return 0.0;
    };
    let bits = top * 8 + (8 - mag[top].leading_zeros() as usize);
    let bit = |i: usize| (mag[i / 8] >> (i % 8)) & 1 == 1;
    if bits <= 64 {
        let mut a = [0u8; 8];
        a[..=top].copy_from_slice(&mag[..=top]);
        return u64::from_le_bytes(a) as f64;
    }
    if bits > 1024 {
        return f64::INFINITY;
    }
    let shift = bits - 64;
    let mut m = 0u64;
    for i in (shift..bits).rev() {
        m = (m << 1) | u64::from(bit(i));
    }
    // Any lower bit set is a sticky bit: OR it into bit 0, far below f64's rounding position.
    if (0..shift).any(bit) {
        m |= 1;
    }
    // 2^shift is exact (shift <= 960); the product overflows to infinity exactly when Python's would.
    (m as f64) * f64::from_bits(((shift as u64) + 1023) << 52)
}

/// `int(text)` for the decimal arguments of INT and LONG (optional sign, surrounding whitespace).
fn int_from_text(text: &[u8]) -> Option<Val> {
    let t = text.trim_ascii();
    let digits = t.strip_prefix(b"-").or_else(|| t.strip_prefix(b"+")).unwrap_or(t);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(t).ok()?;
    Some(match s.parse::<i64>() {
        Ok(i) => Val::Int(i),
        // Decimal to f64 parsing is correctly rounded, as int.__float__ is.
        Err(_) => Val::BigInt(s.parse::<f64>().ok()?),
    })
}

fn decimal(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text.trim_ascii()).ok()?.parse().ok()
}

/// Python's `float(str)` for ASCII input: surrounding whitespace, `inf`/`nan`, and `_` between digits.
pub(crate) fn python_float(text: &[u8]) -> Option<f64> {
    let t = text.trim_ascii();
    if t.contains(&b'_') {
        let ok = t
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'_')
            .all(|(i, _)| i > 0 && t[i - 1].is_ascii_digit() && t.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !ok {
            return None;
        }
        let s: String = t.iter().filter(|&&b| b != b'_').map(|&b| char::from(b)).collect();
        return s.parse().ok();
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Python's `raw-unicode-escape` decoding (the UNICODE opcode), written as UTF-8 (lone surrogates as
/// their 3-byte form, which later fails UTF-8 validation as Python's encoder would).
fn raw_unicode_escape(src: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        if b != b'\\' {
            push_char(out, b.into());
            i += 1;
            continue;
        }
        // A run of backslashes: \u and \U escape only after an odd count.
        let run_start = i;
        while i < src.len() && src[i] == b'\\' {
            i += 1;
        }
        let run = i - run_start;
        let escape = run % 2 == 1 && matches!(src.get(i), Some(b'u' | b'U'));
        let literal = if escape { run - 1 } else { run };
        out.extend(std::iter::repeat_n(b'\\', literal));
        if !escape {
            continue;
        }
        let digits = if src[i] == b'u' { 4 } else { 8 };
        let hex = src.get(i + 1..i + 1 + digits)?;
        let cp = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if cp > 0x10ffff || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        push_char(out, cp);
        i += 1 + digits;
    }
    Some(())
}

fn push_char(out: &mut Vec<u8>, cp: u32) {
    match char::from_u32(cp) {
        Some(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        // A surrogate: the generalized UTF-8 form (invalid UTF-8, rejected later as a bad path).
        None => {
            out.extend_from_slice(&[0xe0 | (cp >> 12) as u8, 0x80 | ((cp >> 6) & 0x3f) as u8, 0x80 | (cp & 0x3f) as u8])
        }
    }
}

/// Python's `codecs.escape_decode` (the STRING opcode's argument, quotes removed).
fn escape_decode(src: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let &c = src.get(i)?; // a trailing backslash is an error
        i += 1;
        match c {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(c),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match src.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let hex = src.get(i..i + 2)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            _ => {
                out.push(b'\\');
                out.push(c);
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests;
