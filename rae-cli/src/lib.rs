//! Library side of `rae-cli`: file formats, data, checkpoints and the commands, so the
//! binary stays a thin argument parser and tests can call the pieces directly.

pub mod pt;
