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
//! - Errors are [`Error::Format`](crate::Error::Format) with source `"JSON"` and the byte
//!   offset in the reason; [`parse_named`] puts a file name in the source instead. Running
//!   out of memory is such an error too, never an abort.
//! - [`JsonValue::to_json_string`] / [`JsonValue::to_json_pretty`] write JSON that parses back
//!   to the same value, numbers bit for bit (shortest round-trip digits, `-0` kept). A
//!   non-finite number is not JSON, so those two methods reject it with an error; the
//!   [`Display`](core::fmt::Display) impl, which cannot fail, writes it as `null`.

use alloc::string::String;
use alloc::vec::Vec;

mod parse;
mod write;

pub use parse::{parse, parse_named};
pub use write::{write_number, write_string};

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
