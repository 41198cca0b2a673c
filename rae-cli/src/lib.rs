//! Library side of `rae-cli`: file formats, data, checkpoints and the commands, so the
//! binary stays a thin argument parser and tests can call the pieces directly.
//!
//! * [`cli`]: the command-line definitions (clap) and nothing else;
//! * [`config`]: flags + YAML + presets + checkpoint metadata settled into finished runs
//!   ([`config::TrainRun`], [`config::Stage1Run`], [`config::Stage2Run`],
//!   [`config::SampleRun`]);
//! * [`store`]: every file on disk (RAE folders, checkpoints, latent caches, atomic writes);
//! * [`commands`]: each command wires its run to the loop and reports progress.

pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dist;
pub mod errors;
pub mod hub;
pub mod image_io;
pub mod limits;
pub mod presets;
pub mod progress;
pub mod pt;
pub mod store;

pub use errors::{CliError, CliResult};
