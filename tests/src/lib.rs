//! # rae-tests
//!
//! Cross-crate tests: parity with the reference fixtures, the backend conformance suite
//! (written once, run on every backend present) and end-to-end runs of `rae-cli`. Shared
//! helpers live here; the tests are under `tests/tests/`.

pub mod bench;
pub mod conformance;
pub mod synthetic;
pub mod util;
