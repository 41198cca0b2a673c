//! Reading a YAML config without trusting it: the file size is bounded before it is read,
//! and the document is built from yaml-rust2's parser events by a loop with an explicit
//! stack (no recursion), refusing aliases before anything is expanded (a billion-laughs file
//! of a kilobyte would otherwise expand to gigabytes) and nesting deeper than
//! [`MAX_YAML_DEPTH`] (which would otherwise overflow the stack of a recursive loader).
//! Scalars are resolved as yaml-rust2's own loader resolves them (YAML 1.2 core schema).

use std::path::Path;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

use crate::errors::{CliError, CliResult};

/// The largest config file read (the reference's configs are a few kilobytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The deepest nesting of sequences and mappings in a config (the reference's go 4 deep).
pub const MAX_YAML_DEPTH: usize = 32;

/// Reads a config file: a regular file of at most [`MAX_CONFIG_BYTES`], UTF-8.
pub fn read_config_text(path: &Path) -> CliResult<String> {
    let bytes = crate::image_io::read_file_limited(path, "the config", MAX_CONFIG_BYTES)?;
    String::from_utf8(bytes)
        .map_err(|_| CliError::new(format!("config {}: not UTF-8 text", path.display())))
}

/// A sequence or mapping being filled, with the key waiting for its value in a mapping.
struct Frame {
    node: Yaml,
    key: Option<Yaml>,
}

fn at(source: &str, mark: &Marker, what: impl std::fmt::Display) -> CliError {
    CliError::new(format!("config {source}: line {}: {what}", mark.line()))
}

/// A scalar, resolved as `yaml_rust2::YamlLoader` does.
fn scalar(v: String, style: TScalarStyle, tag: Option<Tag>) -> Yaml {
    if style != TScalarStyle::Plain {
        return Yaml::String(v);
    }
    match tag {
        None => Yaml::from_str(&v),
        Some(Tag { handle, suffix }) if handle == "tag:yaml.org,2002:" => match suffix.as_str() {
            "bool" => match v.as_str() {
                "true" | "True" | "TRUE" => Yaml::Boolean(true),
                "false" | "False" | "FALSE" => Yaml::Boolean(false),
                _ => Yaml::BadValue,
            },
            "int" => v.parse::<i64>().map_or(Yaml::BadValue, Yaml::Integer),
            "float" => match Yaml::from_str(&v) {
                Yaml::Real(_) | Yaml::Integer(_) => Yaml::Real(v),
                _ => Yaml::BadValue,
            },
            "null" => match v.as_str() {
                "~" | "null" => Yaml::Null,
                _ => Yaml::BadValue,
            },
            _ => Yaml::String(v),
        },
        Some(_) => Yaml::String(v),
    }
}

/// Parses YAML text into its documents. Aliases, nesting deeper than [`MAX_YAML_DEPTH`] and
/// duplicate keys are errors naming `source` and the line.
pub fn parse_documents(text: &str, source: &str) -> CliResult<Vec<Yaml>> {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Yaml> = None;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            let hint = if e.info().contains("recursion limit") {
                format!(" (sequences and mappings may nest {MAX_YAML_DEPTH} levels in a config)")
            } else {
                String::new()
            };
            at(
                source,
                e.marker(),
                format_args!(
                    "not valid YAML: {} at column {}{hint}",
                    e.info(),
                    e.marker().col() + 1
                ),
            )
        })?;
        let done = match ev {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart => None,
            Event::DocumentEnd => {
                docs.push(root.take().unwrap_or(Yaml::Null));
                None
            }
            Event::Alias(_) => {
                return Err(at(
                    source,
                    &mark,
                    "YAML aliases (*name) are not supported; write the value out instead",
                ))
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_YAML_DEPTH {
                    return Err(at(
                        source,
                        &mark,
                        format_args!(
                            "sequences and mappings nest deeper than {MAX_YAML_DEPTH} levels, the limit for a config"
                        ),
                    ));
                }
                let node = match ev {
                    Event::SequenceStart(..) => Yaml::Array(Vec::new()),
                    _ => Yaml::Hash(Hash::new()),
                };
                stack.push(Frame { node, key: None });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame { node, key: None }) => Some(node),
                _ => return Err(at(source, &mark, "unbalanced YAML structure")),
            },
            Event::Scalar(v, style, _, tag) => Some(scalar(v, style, tag)),
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            None if root.is_none() => root = Some(node),
            None => return Err(at(source, &mark, "a second value at the top level")),
            Some(Frame {
                node: Yaml::Array(items),
                ..
            }) => items.push(node),
            Some(Frame {
                node: Yaml::Hash(h),
                key,
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if h.contains_key(&k) {
                        let name = match &k {
                            Yaml::String(s) | Yaml::Real(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            Yaml::Boolean(b) => b.to_string(),
                            _ => "(a complex key)".to_string(),
                        };
                        return Err(at(source, &mark, format_args!("duplicate key {name}")));
                    }
                    h.insert(k, node);
                }
            },
            Some(_) => return Err(at(source, &mark, "unbalanced YAML structure")),
        }
    }
    Ok(docs)
}
