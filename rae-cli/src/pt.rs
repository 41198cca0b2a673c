//! Placeholder: PyTorch .pt reading.
