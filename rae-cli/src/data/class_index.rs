//! Class indices for image folders (`--class-index FILE.json`): which label each class
//! folder gets. Two formats are read:
//! - torchvision's / Keras' `imagenet_class_index.json`: `{"0": ["n01440764", "tench"], ...}`
//!   (label → [folder name, human name]);
//! - a plain map `{"n01440764": 0, ...}` (folder name → label).
//!
//! Labels must be exactly `0..K` (each once), folder names unique. Without an index, the
//! classes are the sorted folder names, as torchvision's `ImageFolder` sorts them.

use std::path::Path;

use rae_core::json::JsonValue;

use crate::errors::{CliError, CliResult};

/// A class index: folder name and human-readable name of each label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassIndex {
    /// `(folder name, description)` by label; the description is the folder name when the
    /// file gives none.
    pub classes: Vec<(String, String)>,
}

impl ClassIndex {
    /// Reads a class index file in either format; errors name the file.
    pub fn read(path: &Path) -> CliResult<ClassIndex> {
        let src = path.display().to_string();
        let json = crate::store::load_json(path)?;
        Self::from_json(&json).map_err(|why| CliError::new(format!("{src}: {why}")))
    }

    /// The label of the class folder `name`.
    pub fn label(&self, name: &str) -> Option<u32> {
        self.classes
            .iter()
            .position(|(n, _)| n == name)
            .map(|p| p as u32)
    }

    fn from_json(json: &JsonValue) -> Result<ClassIndex, String> {
        let members = json
            .as_object()
            .filter(|m| !m.is_empty())
            .ok_or("a class index must be a non-empty JSON object")?;
        let mut by_label: Vec<(usize, String, String)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            let entry = match value {
                // {"0": ["n01440764", "tench"]}
                JsonValue::Array(a) => {
                    let label = key.trim().parse::<usize>().map_err(|_| {
                        format!("key {key:?} is not a label (the torchvision format has \"0\", \"1\", ...)")
                    })?;
                    let name = a.first().and_then(JsonValue::as_str).ok_or_else(|| {
                        format!("label {key}: expected [\"folder\", \"description\"]")
                    })?;
                    let desc = a.get(1).and_then(JsonValue::as_str).unwrap_or(name);
                    (label, name.to_string(), desc.to_string())
                }
                // {"n01440764": 0}
                JsonValue::Number(_) => {
                    let label = value
                        .as_usize()
                        .ok_or_else(|| format!("class {key:?}: label {value:?} is not a whole number"))?;
                    (label, key.clone(), key.clone())
                }
                other => {
                    return Err(format!(
                        "entry {key:?} is a {}: expected a label (number) or [\"folder\", \"description\"]",
                        other.type_name()
                    ))
                }
            };
            by_label.push(entry);
        }
        let k = by_label.len();
        if k > rae_core::limits::MAX_CLASSES {
            return Err(format!("{k} classes is more than the limit"));
        }
        by_label.sort_by_key(|e| e.0);
        for (want, e) in by_label.iter().enumerate() {
            if e.0 != want {
                return Err(format!(
                    "the labels must be 0..{k}, each once; label {want} is {}",
                    if e.0 < want { "repeated" } else { "missing" }
                ));
            }
        }
        let mut names: Vec<&str> = by_label.iter().map(|e| e.1.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("class folder {:?} has two labels", w[0]));
        }
        Ok(ClassIndex {
            classes: by_label.into_iter().map(|(_, n, d)| (n, d)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Result<ClassIndex, String> {
        ClassIndex::from_json(&rae_core::json::parse(s).unwrap())
    }

    #[test]
    fn both_formats() {
        let a = parse(r#"{"1": ["n02", "goldfish"], "0": ["n01", "tench"]}"#).unwrap();
        assert_eq!(a.label("n01"), Some(0));
        assert_eq!(a.label("n02"), Some(1));
        assert_eq!(a.classes[1].1, "goldfish");
        let b = parse(r#"{"n02": 1, "n01": 0}"#).unwrap();
        assert_eq!(b.label("n02"), Some(1));
        assert!(parse(r#"{"n01": 0, "n02": 0}"#)
            .unwrap_err()
            .contains("repeated"));
        assert!(parse(r#"{"n01": 0, "n02": 2}"#)
            .unwrap_err()
            .contains("missing"));
        assert!(parse(r#"{"0": ["a"], "1": ["a"]}"#)
            .unwrap_err()
            .contains("two labels"));
        assert!(parse(r#"[1]"#).is_err());
        assert!(parse(r#"{"x": "y"}"#).is_err());
    }
}
