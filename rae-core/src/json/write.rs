//! The JSON writer: [`JsonValue::to_json_string`], [`JsonValue::to_json_pretty`],
//! [`write_number`], [`write_string`] and the [`Display`](core::fmt::Display) impl.

use alloc::format;
use alloc::string::String;
use core::fmt::{self, Write};

use super::JsonValue;
use crate::error::{Error, Result};

impl JsonValue {
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
