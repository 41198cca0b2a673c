//! Placeholder: filled by the metrics work.
