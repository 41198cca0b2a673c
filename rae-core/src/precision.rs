//! The precision matrix products and attention run in (spec §7.5): `fp32`, `tf32` (tensor
//! cores on f32 data, the reference's `allow_tf32 = True`) or `bf16` (operands staged in
//! bfloat16 with f32 accumulation, as PyTorch's autocast does).
//!
//! Storage is f32 in every case: master weights, optimiser state, norms, softmax statistics
//! and every element-wise op stay f32. Only the operands of matrix products (and of
//! attention) are rounded to the narrower format; the accumulation is f32. A backend that
//! has no tensor cores runs f32 instead; [`CpuBackend`](crate::CpuBackend) emulates the
//! operand rounding exactly, so the numerics can be tested without a GPU.

use core::fmt;

use crate::error::{Error, Result};

/// How matrix-product operands are rounded before an f32-accumulated product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// Plain f32 (24-bit significand).
    #[default]
    Fp32,
    /// TensorFloat-32: operands rounded to a 10-bit stored mantissa (f32 exponent).
    Tf32,
    /// bfloat16: operands rounded to a 7-bit stored mantissa (f32 exponent).
    Bf16,
}

impl Precision {
    /// Every precision, in order of decreasing accuracy.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// The name used on the command line and in configs (`fp32`, `tf32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Reads a name; `what` names the setting in the error (for example `--precision`).
    /// `fp16` (which the reference also offers, with a gradient scaler) is refused with a
    /// pointer to `bf16`.
    pub fn parse(s: &str, what: &str) -> Result<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" => Err(Error::config(
                what,
                "fp16 autocast (with a gradient scaler) is not supported; use bf16, which \
                 needs no loss scaling",
            )),
            other => Err(Error::config(
                what,
                alloc::format!("{other:?} is not a precision (choose fp32, tf32 or bf16)"),
            )),
        }
    }

    /// Stored mantissa bits of the operand format (23, 10, 7).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            Precision::Fp32 => 23,
            Precision::Tf32 => 10,
            Precision::Bf16 => 7,
        }
    }

    /// `x` rounded to this format (round to nearest, ties to even), kept as an f32. NaN and
    /// infinities pass unchanged; a finite value that rounds past the largest one becomes
    /// an infinity, as the hardware conversion does.
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        let drop = 23 - self.mantissa_bits();
        if drop == 0 {
            return x;
        }
        let bits = x.to_bits();
        if bits & 0x7f80_0000 == 0x7f80_0000 {
            return x;
        }
        let lsb = (bits >> drop) & 1;
        let half = (1u32 << (drop - 1)) - 1;
        let mask = !((1u32 << drop) - 1);
        f32::from_bits(bits.wrapping_add(half + lsb) & mask)
    }

    /// Rounds every value of `xs` in place ([`Precision::round`]).
    pub fn round_slice(self, xs: &mut [f32]) {
        if self != Precision::Fp32 {
            for x in xs {
                *x = self.round(*x);
            }
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn rounding_is_to_nearest_even_on_the_kept_mantissa() {
        let p = Precision::Bf16;
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1).
        assert_eq!(p.round(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
        assert_eq!(p.round(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(p.round(1.0 + 1.1 / 256.0), 1.0 + 1.0 / 128.0);
        assert_eq!(Precision::Tf32.round(1.0 + 1.0 / 4096.0), 1.0);
        // tf32: 1 + 3·2^-11 is the tie between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(
            Precision::Tf32.round(1.0 + 3.0 / 2048.0),
            1.0 + 2.0 / 1024.0
        );
        assert_eq!(
            Precision::Tf32.round(1.0 + 1.5 / 2048.0),
            1.0 + 1.0 / 1024.0
        );
        assert_eq!(
            Precision::Fp32.round(1.0 + f32::EPSILON),
            1.0 + f32::EPSILON
        );
        assert_eq!(p.round(-3.0), -3.0);
    }

    #[test]
    fn special_values_survive_and_overflow_goes_to_infinity() {
        for p in Precision::ALL {
            assert!(p.round(f32::NAN).is_nan());
            assert_eq!(p.round(f32::INFINITY), f32::INFINITY);
            assert_eq!(p.round(f32::NEG_INFINITY), f32::NEG_INFINITY);
            assert_eq!(p.round(0.0), 0.0);
        }
        assert_eq!(Precision::Bf16.round(f32::MAX), f32::INFINITY);
        assert_eq!(Precision::Bf16.round(-f32::MAX), f32::NEG_INFINITY);
    }

    #[test]
    fn relative_error_is_within_half_an_ulp_of_the_format() {
        let mut s = 0x1234_5678u32;
        for p in Precision::ALL {
            let bound = 0.5 * (2.0f64).powi(-(p.mantissa_bits() as i32));
            for _ in 0..10_000 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let x = f32::from_bits((s & 0x3fff_ffff) | 0x0080_0000);
                let r = p.round(x) as f64;
                assert!(((r - x as f64) / x as f64).abs() <= bound, "{p} {x}");
            }
        }
    }

    #[test]
    fn names_parse_and_fp16_is_refused_with_a_pointer() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.name(), "--precision").ok(), Some(p));
        }
        let e = Precision::parse("fp16", "--precision")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("bf16") && m.contains("--precision")));
        assert!(Precision::parse("fp8", "x").is_err());
    }
}
