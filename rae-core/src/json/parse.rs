//! The JSON reader: [`parse`] and [`parse_named`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::{JsonValue, MAX_DEPTH};
use crate::error::{Error, Result};

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

    /// Room for one more item in `v`, or an error (never an abort) when memory runs out.
    fn grow<T>(&self, v: &mut Vec<T>) -> Result<()> {
        v.try_reserve(1)
            .map_err(|_| self.out_of_memory(self.pos, "an array or object"))
    }

    fn out_of_memory(&self, at: usize, what: &str) -> Error {
        self.err(at, format!("out of memory while reading {what}"))
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
            let v = self.value(depth)?;
            self.grow(&mut items)?;
            items.push(v);
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
            self.grow(&mut members)?;
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
            let run = &self.text[start..self.pos];
            out.try_reserve(run.len() + 4)
                .map_err(|_| self.out_of_memory(open, "a string"))?;
            out.push_str(run);
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
