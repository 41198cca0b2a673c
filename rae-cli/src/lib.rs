//! Library side of `rae-cli`: file formats, data, checkpoints and the commands, so the
//! binary stays a thin argument parser and tests can call the pieces directly.

pub mod backends;
pub mod ckpt;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod encoders;
pub mod errors;
pub mod files;
pub mod image_io;
pub mod limits;
pub mod presets;
pub mod progress;
pub mod pt;
pub mod store;

pub use errors::{CliError, CliResult};
