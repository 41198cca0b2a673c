//! [`Tensor`]: a backend storage handle plus a row-major, contiguous shape.

use core::fmt;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::shape::Shape;

/// A tensor living in the memory of backend `B`: a storage handle and a row-major,
/// contiguous [`Shape`]. Cloning clones the handle, not the data; ops never write into an
/// input, so a clone is a safe snapshot (saved activations rely on this).
pub struct Tensor<B: Backend> {
    storage: B::Storage,
    shape: Shape,
}

impl<B: Backend> Tensor<B> {
    /// Wraps a storage handle; for backend implementations. The caller guarantees that the
    /// storage holds at least `shape.numel()` elements.
    pub fn from_parts(storage: B::Storage, shape: Shape) -> Self {
        Tensor { storage, shape }
    }

    /// The backend storage handle.
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }

    /// The storage handle, mutably (for backends that update a tensor in place).
    pub(crate) fn storage_mut(&mut self) -> &mut B::Storage {
        &mut self.storage
    }

    /// Takes the storage handle apart from the shape.
    pub fn into_parts(self) -> (B::Storage, Shape) {
        (self.storage, self.shape)
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The same data under another shape with the same number of elements (free: the
    /// layout is row-major and contiguous).
    pub fn reshape(&self, dims: &[usize]) -> Result<Self> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.shape.numel() {
            return Err(Error::shape("reshape", &self.shape, &shape));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape,
        })
    }

    /// An error unless the shape is exactly `dims`.
    pub fn expect_dims(&self, op: &'static str, dims: &[usize]) -> Result<()> {
        if self.dims() != dims {
            return Err(Error::shape(op, &Shape::new(dims)?, &self.shape));
        }
        Ok(())
    }
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor {
            storage: self.storage.clone(),
            shape: self.shape.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{}", self.shape)
    }
}
