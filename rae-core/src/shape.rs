//! Tensor shapes held inline (no allocation), row-major and contiguous.

use core::fmt;

use crate::error::{Error, Result};

/// Largest rank a [`Shape`] holds. Six covers `[B, N, 3, H, hd]` views with room to spare.
pub const MAX_DIMS: usize = 6;

/// The dimensions of a row-major, contiguous tensor, stored without allocation.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(heapless::Vec<usize, MAX_DIMS>);

impl Shape {
    /// A shape from its dimensions; more than [`MAX_DIMS`] dimensions is an error.
    pub fn new(dims: &[usize]) -> Result<Self> {
        let mut v = heapless::Vec::new();
        for &d in dims {
            v.push(d)
                .map_err(|_| Error::RankTooLarge { rank: dims.len() })?;
        }
        // numel() multiplies without checks, so a shape's element count must fit a usize.
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            return Err(Error::invalid(
                "shape",
                alloc::format!("{dims:?} has more elements than a usize holds"),
            ));
        }
        Ok(Shape(v))
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a rank-0 shape).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Dimension `i`, counted from the front; `None` when out of range.
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.0.get(i).copied()
    }

    /// The last dimension (1 for a rank-0 shape).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last: the number of rows of the `[rows, last]` view.
    pub fn rows(&self) -> usize {
        let n = self.0.len();
        if n == 0 {
            1
        } else {
            self.0[..n - 1].iter().product()
        }
    }

    /// The same shape with the last dimension replaced.
    pub fn with_last(&self, last: usize) -> Self {
        let mut s = self.clone();
        match s.0.last_mut() {
            Some(l) => *l = last,
            None => {
                // Rank-0 shapes become rank 1; pushing into an empty vector cannot fail.
                let _ = s.0.push(last);
            }
        }
        s
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl TryFrom<&[usize]> for Shape {
    type Error = Error;
    fn try_from(d: &[usize]) -> Result<Self> {
        Shape::new(d)
    }
}

/// Builds a [`Shape`] from a list of dimensions (panics only above [`MAX_DIMS`], which a
/// literal list written in code never reaches).
#[macro_export]
macro_rules! shape {
    ($($d:expr),* $(,)?) => {
        $crate::shape::Shape::new(&[$($d),*])
    };
}
