//! Reading model configurations from JSON (`config.json` of HuggingFace, the reference's
//! constructor arguments) with errors that name the file and the key.

use alloc::format;
use alloc::string::String;

use crate::error::{Error, Result};
use crate::json::JsonValue;

/// A JSON object being read as a configuration, remembering its source for errors.
#[derive(Debug, Clone, Copy)]
pub struct Cfg<'a> {
    v: &'a JsonValue,
    source: &'a str,
}

impl<'a> Cfg<'a> {
    /// Wraps a parsed object; `source` names it in errors (a file name).
    pub fn new(v: &'a JsonValue, source: &'a str) -> Result<Self> {
        if v.as_object().is_none() {
            return Err(Error::format(
                source,
                "the configuration is not a JSON object",
            ));
        }
        Ok(Cfg { v, source })
    }

    fn key(&self, key: &str) -> String {
        format!("{}: {key}", self.source)
    }

    /// Whether `key` is present (and not null).
    pub fn has(&self, key: &str) -> bool {
        self.v.get(key).is_some_and(|x| !x.is_null())
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        match self.v.get(key) {
            Some(x) => x
                .as_usize()
                .ok_or_else(|| Error::config(self.key(key), "expected a non-negative integer")),
            None => Err(Error::config(self.key(key), "missing")),
        }
    }

    /// An optional non-negative integer.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.has(key) {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    /// An optional number.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.v.get(key) {
            Some(x) if !x.is_null() => x
                .as_f64()
                .ok_or_else(|| Error::config(self.key(key), "expected a number")),
            _ => Ok(default),
        }
    }

    /// An optional boolean.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.v.get(key) {
            Some(x) if !x.is_null() => x
                .as_bool()
                .ok_or_else(|| Error::config(self.key(key), "expected true or false")),
            _ => Ok(default),
        }
    }

    /// An optional string.
    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.v.get(key) {
            Some(x) if !x.is_null() => x
                .as_str()
                .ok_or_else(|| Error::config(self.key(key), "expected a string")),
            _ => Ok(default),
        }
    }

    /// An integer or a two-element integer list (DiT-DH's `[backbone, head]` pairs).
    pub fn pair(&self, key: &str) -> Result<(usize, usize)> {
        let x = self
            .v
            .get(key)
            .ok_or_else(|| Error::config(self.key(key), "missing"))?;
        if let Some(n) = x.as_usize() {
            return Ok((n, n));
        }
        match x.as_array() {
            Some([a, b]) => match (a.as_usize(), b.as_usize()) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err(Error::config(
                    self.key(key),
                    "expected two non-negative integers",
                )),
            },
            _ => Err(Error::config(
                self.key(key),
                "expected an integer or a list of two integers",
            )),
        }
    }
}
