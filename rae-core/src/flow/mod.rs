//! Placeholder: filled by the flow work.
