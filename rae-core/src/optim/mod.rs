//! Placeholder: filled by the optim work.
