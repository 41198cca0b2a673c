//! The value types of the 2-D window ops ([`Backend::im2col`](super::Backend::im2col),
//! [`Backend::col2im`](super::Backend::col2im), [`Backend::pool2d`](super::Backend::pool2d)
//! and its backward): the window geometry on NCHW data and the pooling kind.

use alloc::format;

use crate::error::{Error, Result};

/// Geometry of a 2-D window op on NCHW data: input `[n, c, h, w]`, window `kh×kw`, stride
/// `(sh, sw)`, zero padding `(ph, pw)` on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero padding above and below.
    pub ph: usize,
    /// Zero padding left and right.
    pub pw: usize,
}

/// The kind of [`Backend::pool2d`](super::Backend::pool2d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool2d {
    /// Maximum over the in-bounds elements of each window (padding never wins).
    Max,
    /// Average; `count_pad`: divide by `kh·kw` (PyTorch `count_include_pad=True`) or by the
    /// number of in-bounds elements (`False`).
    Avg {
        /// Whether padded positions count in the divisor.
        count_pad: bool,
    },
}

impl Window2d {
    /// The window `k` with stride `s` and padding `p` over an input of shape `dims`
    /// (`[n, c, h, w]`, else an error naming `op`), checked with [`Window2d::check`].
    pub fn nchw(
        op: &'static str,
        dims: &[usize],
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
    ) -> Result<Self> {
        let &[n, c, h, w] = dims else {
            return Err(Error::bad_shape(
                op,
                &crate::Shape::new(dims)?,
                "expected [n, c, h, w]",
            ));
        };
        let g = Window2d {
            n,
            c,
            h,
            w,
            kh: k.0,
            kw: k.1,
            sh: s.0,
            sw: s.1,
            ph: p.0,
            pw: p.1,
        };
        g.check()?;
        Ok(g)
    }

    /// Output size `(ho, wo)`: `⌊(h + 2·ph − kh)/sh⌋ + 1` and likewise for the width (0
    /// where the window does not fit, which [`Window2d::check`] rejects).
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |x: usize, p: usize, k: usize, s: usize| match (x + 2 * p).checked_sub(k) {
            Some(r) if s > 0 => r / s + 1,
            _ => 0,
        };
        (
            o(self.h, self.ph, self.kh, self.sh),
            o(self.w, self.pw, self.kw, self.sw),
        )
    }

    /// The input shape `[n, c, h, w]`.
    pub fn input_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// The im2col shape `[n, ho·wo, c·kh·kw]`.
    pub fn cols_dims(&self) -> [usize; 3] {
        let (ho, wo) = self.out_hw();
        [self.n, ho * wo, self.c * self.kh * self.kw]
    }

    /// The pooled shape `[n, c, ho, wo]`.
    pub fn pooled_dims(&self) -> [usize; 4] {
        let (ho, wo) = self.out_hw();
        [self.n, self.c, ho, wo]
    }

    /// Errors for a zero size, stride or window, a window larger than the padded input, and
    /// sizes whose products overflow.
    pub fn check(&self) -> Result<()> {
        let what = "2-D window";
        let named = [
            ("batch", self.n),
            ("channels", self.c),
            ("height", self.h),
            ("width", self.w),
            ("window height", self.kh),
            ("window width", self.kw),
            ("vertical stride", self.sh),
            ("horizontal stride", self.sw),
        ];
        if let Some((name, _)) = named.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(what, format!("{name} is 0 in {self:?}")));
        }
        let padded = |x: usize, p: usize| p.checked_mul(2).and_then(|p| p.checked_add(x));
        let (Some(hp), Some(wp)) = (padded(self.h, self.ph), padded(self.w, self.pw)) else {
            return Err(Error::invalid(
                what,
                format!("padding overflows in {self:?}"),
            ));
        };
        if self.kh > hp || self.kw > wp {
            return Err(Error::invalid(
                what,
                format!(
                    "the {}×{} window is larger than the padded {hp}×{wp} input",
                    self.kh, self.kw
                ),
            ));
        }
        let (ho, wo) = self.out_hw();
        let prod = |xs: &[usize]| xs.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        let sizes = [
            prod(&[self.n, self.c, hp, wp]),
            prod(&[self.n, ho, wo, self.c, self.kh, self.kw]),
        ];
        if sizes.iter().any(Option::is_none) {
            return Err(Error::invalid(
                what,
                format!("the sizes of {self:?} overflow"),
            ));
        }
        Ok(())
    }

    /// [`Window2d::check`] plus PyTorch's pooling rule that padding is at most half the
    /// window (`ph ≤ kh/2`, `pw ≤ kw/2`), so every window holds an input element.
    pub fn check_pool(&self) -> Result<()> {
        self.check()?;
        if 2 * self.ph > self.kh || 2 * self.pw > self.kw {
            return Err(Error::invalid(
                "2-D pooling",
                format!(
                    "padding ({}, {}) is more than half the {}×{} window",
                    self.ph, self.pw, self.kh, self.kw
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(h: usize, w: usize, k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> Window2d {
        Window2d {
            n: 2,
            c: 3,
            h,
            w,
            kh: k.0,
            kw: k.1,
            sh: s.0,
            sw: s.1,
            ph: p.0,
            pw: p.1,
        }
    }

    #[test]
    fn output_size_follows_pytorch() {
        assert_eq!(g(35, 35, (3, 3), (1, 1), (1, 1)).out_hw(), (35, 35));
        assert_eq!(g(35, 35, (3, 3), (2, 2), (0, 0)).out_hw(), (17, 17));
        assert_eq!(g(17, 17, (1, 7), (1, 1), (0, 3)).out_hw(), (17, 17));
        assert_eq!(g(2, 9, (5, 1), (2, 1), (2, 0)).out_hw(), (1, 9));
        assert_eq!(g(4, 4, (7, 7), (1, 1), (0, 0)).out_hw(), (0, 0));
    }

    #[test]
    fn bad_geometry_is_a_named_error() {
        let msg = |w: Window2d| {
            w.check()
                .err()
                .map(|e| alloc::string::ToString::to_string(&e))
        };
        assert!(msg(g(0, 4, (1, 1), (1, 1), (0, 0))).is_some_and(|m| m.contains("height is 0")));
        assert!(msg(g(4, 4, (3, 3), (0, 1), (0, 0))).is_some_and(|m| m.contains("stride is 0")));
        assert!(msg(g(4, 4, (7, 3), (1, 1), (1, 0))).is_some_and(|m| m.contains("larger")));
        assert!(msg(g(usize::MAX, 4, (1, 1), (1, 1), (1, 0))).is_some());
        assert!(g(4, 4, (7, 3), (1, 1), (2, 0)).check().is_ok());
        assert!(g(4, 4, (3, 3), (1, 1), (2, 0)).check_pool().is_err());
        assert!(g(4, 4, (3, 3), (2, 2), (1, 1)).check_pool().is_ok());
    }
}
