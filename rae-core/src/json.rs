//! A small, strict JSON (RFC 8259) reader and writer for `config.json` files and safetensors
//! headers, without serde and without `std`.
//!
//! - [`parse`] accepts exactly the RFC 8259 grammar: no comments, no trailing commas, no
//!   `NaN`/`Infinity`, no leading zeros or `+` signs, no raw control characters in strings,
//!   no byte-order mark.
//!   Strings may use every escape, including `\uXXXX` with surrogate pairs (a lone surrogate
//!   is an error because a Rust `String` cannot hold it). Numbers are read as the nearest
//!   `f64`; a number too large for an `f64` is an error. Nesting deeper than [`MAX_DEPTH`]
//!   is an error, so hostile input cannot overflow the stack.
//! - Objects keep their keys in file order, duplicates included ([`JsonValue::Object`] is a
//!   list of pairs), so a caller such as the safetensors reader can reject duplicate keys;
//!   [`JsonValue::get`] returns the *last* value of a repeated key, as Python's `json` does.
//! - Errors are [`Error::Format`] with source `"JSON"` and the byte offset in the reason;
//!   [`parse_named`] puts a file name in the source instead.
//! - [`JsonValue::to_json_string`] / [`JsonValue::to_json_pretty`] write JSON that parses back
//!   to the same value, numbers bit for bit (shortest round-trip digits, `-0` kept). A
//!   non-finite number is not JSON, so those two methods reject it with an error; the
//!   [`Display`](core::fmt::Display) impl, which cannot fail, writes it as `null`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::error::{Error, Result};

/// Deepest nesting of arrays and objects that [`parse`] accepts (the top-level array or object
/// is level 1). HuggingFace configs nest three or four levels.
pub const MAX_DEPTH: usize = 128;

/// Largest integer magnitude an `f64` holds exactly together with all its neighbours
/// (2^53 - 1, JavaScript's `Number.MAX_SAFE_INTEGER`). Beyond it, the integer read from a
/// file may not be the one written, so the integer accessors refuse it.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A JSON value. Numbers are `f64`; objects are ordered lists of `(key, value)` pairs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum JsonValue {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (always finite when it comes from [`parse`]).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<JsonValue>),
    /// An object, its members in file (or insertion) order.
    Object(Vec<(String, JsonValue)>),
}

/// Parses one JSON text (surrounding whitespace allowed, nothing else after the value).
///
/// Errors are [`Error::Format`] with source `"JSON"` and a reason that starts with the byte
/// offset of the problem.
pub fn parse(text: &str) -> Result<JsonValue> {
    let mut p = Parser {
        text,
        s: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err(p.pos, "unexpected text after the JSON value"));
    }
    Ok(v)
}

/// [`parse`], with errors naming `source` (a file name) instead of `"JSON"`.
pub fn parse_named(text: &str, source: &str) -> Result<JsonValue> {
    parse(text).map_err(|e| match e {
        Error::Format { reason, .. } => Error::format(source, format!("invalid JSON {reason}")),
        other => other,
    })
}

struct Parser<'t> {
    text: &'t str,
    s: &'t [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, at: usize, reason: impl fmt::Display) -> Error {
        Error::format("JSON", format!("at byte {at}: {reason}"))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Describes the character at `at` for an error message.
    fn describe(&self, at: usize) -> String {
        match self.text.get(at..).and_then(|t| t.chars().next()) {
            None => "end of input".to_string(),
            Some(c) if c.is_control() => format!("character U+{:04X}", c as u32),
            Some(c) => format!("character '{c}'"),
        }
    }

    fn expect_byte(&mut self, b: u8, what: &str) -> Result<()> {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(
                self.pos,
                format!("expected {what}, found {}", self.describe(self.pos)),
            ))
        }
    }

    /// One value at the current position (whitespace already skipped); `depth` is the
    /// number of arrays/objects that enclose it.
    fn value(&mut self, depth: usize) -> Result<JsonValue> {
        match self.s.get(self.pos) {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(JsonValue::String(self.string()?)),
            Some(b't') => self.literal("true", JsonValue::Bool(true)),
            Some(b'f') => self.literal("false", JsonValue::Bool(false)),
            Some(b'n') => self.literal("null", JsonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err(
                self.pos,
                format!("expected a JSON value, found {}", self.describe(self.pos)),
            )),
        }
    }

    fn literal(&mut self, word: &str, v: JsonValue) -> Result<JsonValue> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err(self.pos, format!("invalid literal (expected `{word}`)")))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            Err(self.err(
                self.pos,
                format!("arrays/objects nested deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue> {
        self.check_depth(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => {
                    return Err(self.err(
                        self.pos,
                        format!(
                            "expected ',' or ']' in an array, found {}",
                            self.describe(self.pos)
                        ),
                    ))
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue> {
        self.check_depth(depth)?;
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b'"') {
                return Err(self.err(
                    self.pos,
                    format!(
                        "expected a string key in an object, found {}",
                        self.describe(self.pos)
                    ),
                ));
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect_byte(b':', "':' after an object key")?;
            self.skip_ws();
            let v = self.value(depth)?;
            members.push((key, v));
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(JsonValue::Object(members));
                }
                _ => {
                    return Err(self.err(
                        self.pos,
                        format!(
                            "expected ',' or '}}' in an object, found {}",
                            self.describe(self.pos)
                        ),
                    ))
                }
            }
        }
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<String> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain characters; it ends at an ASCII byte, so the slice
            // boundaries are character boundaries.
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.s.get(self.pos) {
                None => return Err(self.err(open, "unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = self.pos;
                    let kind = self.s.get(esc + 1).copied();
                    self.pos = esc + 2;
                    let c = match kind {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape(esc)?,
                        _ => {
                            return Err(self.err(
                                esc,
                                format!(
                                    "invalid escape in a string: backslash followed by {}",
                                    self.describe(esc + 1)
                                ),
                            ))
                        }
                    };
                    out.push(c);
                }
                Some(&b) => {
                    return Err(self.err(
                        self.pos,
                        format!("control character U+{b:04X} in a string must be escaped"),
                    ))
                }
            }
        }
    }

    /// Four hex digits at the current position.
    fn hex4(&mut self, esc: usize) -> Result<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.s.get(self.pos) {
                Some(&b) => (b as char).to_digit(16),
                None => None,
            };
            match d {
                Some(d) => v = v * 16 + d,
                None => return Err(self.err(esc, "\\u must be followed by four hex digits")),
            }
            self.pos += 1;
        }
        Ok(v)
    }

    /// The character of a `\uXXXX` escape (or a `\uD8xx\uDCxx` surrogate pair); the
    /// position is just after the `u`.
    fn unicode_escape(&mut self, esc: usize) -> Result<char> {
        let hi = self.hex4(esc)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            let second = self.pos;
            if self.s.get(second) != Some(&b'\\') || self.s.get(second + 1) != Some(&b'u') {
                return Err(self.err(esc, "high surrogate escape not followed by a low one"));
            }
            self.pos += 2;
            let lo = self.hex4(second)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err(second, "high surrogate escape not followed by a low one"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(self.err(esc, "lone low surrogate escape"));
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err(esc, "escape is not a Unicode scalar value"))
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<JsonValue> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let d0 = p.pos;
            while let Some(b'0'..=b'9') = p.s.get(p.pos) {
                p.pos += 1;
            }
            p.pos - d0
        };
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n_int = digits(self);
        if n_int == 0 {
            return Err(self.err(start, "a number needs digits after the sign"));
        }
        if n_int > 1 && self.s[int_start] == b'0' {
            return Err(self.err(start, "numbers may not have leading zeros"));
        }
        if self.s.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.err(start, "a number needs digits after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.s.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.err(start, "a number needs digits in its exponent"));
            }
        }
        let lit = &self.text[start..self.pos];
        match lit.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(JsonValue::Number(x)),
            _ => Err(self.err(start, format!("number {lit} is too large for an f64"))),
        }
    }
}

impl JsonValue {
    /// An object from `(key, value)` pairs, kept in the given order.
    ///
    /// `JsonValue::object([("hidden_size", JsonValue::array([32, 64])), ("eps", 1e-6.into())])`
    pub fn object<K, V>(members: impl IntoIterator<Item = (K, V)>) -> JsonValue
    where
        K: Into<String>,
        V: Into<JsonValue>,
    {
        JsonValue::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// An array from anything that converts to JSON values.
    pub fn array<V: Into<JsonValue>>(items: impl IntoIterator<Item = V>) -> JsonValue {
        JsonValue::Array(items.into_iter().map(Into::into).collect())
    }

    /// The value of `key` when `self` is an object holding it (the last one if the key is
    /// repeated); `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        match self {
            JsonValue::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, JsonValue::Null)
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Number(x) => Some(*x),
            _ => None,
        }
    }

    /// The number as an `i64`, only if it is an integer of magnitude at most
    /// [`MAX_SAFE_INTEGER`] (so it is exactly the integer the text held). `3.0` gives 3,
    /// `3.5` gives `None`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            JsonValue::Number(x) if libm::trunc(*x) == *x && x.abs() <= MAX_SAFE_INTEGER => {
                Some(*x as i64)
            }
            _ => None,
        }
    }

    /// The number as a `usize`: like [`as_i64`](Self::as_i64), and not negative.
    pub fn as_usize(&self) -> Option<usize> {
        self.as_i64().and_then(|i| usize::try_from(i).ok())
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            JsonValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[JsonValue]> {
        match self {
            JsonValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members in order, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, JsonValue)]> {
        match self {
            JsonValue::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The JSON type's name (`"null"`, `"bool"`, `"number"`, `"string"`, `"array"`,
    /// `"object"`), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "bool",
            JsonValue::Number(_) => "number",
            JsonValue::String(_) => "string",
            JsonValue::Array(_) => "array",
            JsonValue::Object(_) => "object",
        }
    }

    /// Compact JSON text (no whitespace). A NaN or infinite number is an error naming its
    /// path (such as `$.lr[2]`), because JSON has no such numbers.
    pub fn to_json_string(&self) -> Result<String> {
        self.check_finite(&mut String::from("$"))?;
        Ok(self.render(None))
    }

    /// JSON text indented by two spaces per level, one member per line, with a final newline
    /// (the layout of Python's `json.dump(indent=2)`). Non-finite numbers are rejected as in
    /// [`to_json_string`](Self::to_json_string).
    pub fn to_json_pretty(&self) -> Result<String> {
        self.check_finite(&mut String::from("$"))?;
        let mut s = self.render(Some(2));
        s.push('\n');
        Ok(s)
    }

    fn render(&self, indent: Option<usize>) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = self.write(&mut s, indent, 0);
        s
    }

    fn check_finite(&self, path: &mut String) -> Result<()> {
        match self {
            JsonValue::Number(x) if !x.is_finite() => Err(Error::format(
                "JSON",
                format!("cannot write the non-finite number {x} at {path}"),
            )),
            JsonValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let len = path.len();
                    let _ = write!(path, "[{i}]");
                    v.check_finite(path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            JsonValue::Object(m) => {
                for (k, v) in m {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    v.check_finite(path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn write<W: Write>(&self, w: &mut W, indent: Option<usize>, level: usize) -> fmt::Result {
        let newline = |w: &mut W, level: usize| -> fmt::Result {
            if let Some(n) = indent {
                w.write_char('\n')?;
                for _ in 0..n * level {
                    w.write_char(' ')?;
                }
            }
            Ok(())
        };
        match self {
            JsonValue::Null => w.write_str("null"),
            JsonValue::Bool(b) => w.write_str(if *b { "true" } else { "false" }),
            JsonValue::Number(x) => write_number(w, *x),
            JsonValue::String(s) => write_string(w, s),
            JsonValue::Array(a) => {
                if a.is_empty() {
                    return w.write_str("[]");
                }
                w.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    newline(w, level + 1)?;
                    v.write(w, indent, level + 1)?;
                }
                newline(w, level)?;
                w.write_char(']')
            }
            JsonValue::Object(m) => {
                if m.is_empty() {
                    return w.write_str("{}");
                }
                w.write_char('{')?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    newline(w, level + 1)?;
                    write_string(w, k)?;
                    w.write_str(if indent.is_some() { ": " } else { ":" })?;
                    v.write(w, indent, level + 1)?;
                }
                newline(w, level)?;
                w.write_char('}')
            }
        }
    }
}

/// Writes `x` as a JSON number with the fewest digits that read back to the same `f64`
/// (`-0` for negative zero). Plain notation for magnitudes in `[1e-5, 1e16)`, exponent
/// notation otherwise; a non-finite `x` is written as `null`.
pub fn write_number<W: Write>(w: &mut W, x: f64) -> fmt::Result {
    if !x.is_finite() {
        w.write_str("null")
    } else if x == 0.0 || (1e-5..1e16).contains(&x.abs()) {
        // `{}` on f64 prints the shortest round-trip digits, without an exponent.
        write!(w, "{x}")
    } else {
        write!(w, "{x:e}")
    }
}

/// Writes `s` as a JSON string literal: quotes, backslashes and control characters escaped,
/// everything else as UTF-8.
pub fn write_string<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        if esc.is_empty() {
            write!(w, "\\u{:04x}", c as u32)?;
        } else {
            w.write_str(esc)?;
        }
        start = i + c.len_utf8();
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

/// Compact JSON; a non-finite number is written as `null` (use
/// [`JsonValue::to_json_string`] to have it rejected instead).
impl fmt::Display for JsonValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None, 0)
    }
}

impl From<bool> for JsonValue {
    fn from(b: bool) -> Self {
        JsonValue::Bool(b)
    }
}

impl From<f64> for JsonValue {
    fn from(x: f64) -> Self {
        JsonValue::Number(x)
    }
}

impl From<f32> for JsonValue {
    /// The exact value of the `f32` (so `0.1f32` is written as `0.10000000149011612`).
    fn from(x: f32) -> Self {
        JsonValue::Number(x as f64)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for JsonValue {
            /// Exact up to 2^53 in magnitude; larger integers are rounded to the nearest `f64`.
            fn from(i: $t) -> Self {
                JsonValue::Number(i as f64)
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl From<&str> for JsonValue {
    fn from(s: &str) -> Self {
        JsonValue::String(s.into())
    }
}

impl From<String> for JsonValue {
    fn from(s: String) -> Self {
        JsonValue::String(s)
    }
}

impl From<Vec<JsonValue>> for JsonValue {
    fn from(a: Vec<JsonValue>) -> Self {
        JsonValue::Array(a)
    }
}

impl<T: Into<JsonValue>> From<Option<T>> for JsonValue {
    /// `None` is `null`.
    fn from(o: Option<T>) -> Self {
        o.map_or(JsonValue::Null, Into::into)
    }
}
