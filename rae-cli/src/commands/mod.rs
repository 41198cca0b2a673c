//! The commands of `rae-cli`.

pub mod check_data;
pub mod codec;
pub mod eval;
pub mod export;
pub mod generate;
pub mod sample;
pub mod stats;
pub mod tools;
pub mod train;
