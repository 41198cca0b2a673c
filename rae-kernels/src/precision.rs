//! Reduced-precision matrix products on a [`CubeBackend`] (spec §7.5): choosing a precision
//! the device has tensor cores for, emulating one it has not (for tests), and the operand
//! rounding of attention.

use cubecl::prelude::*;
use rae_core::{Precision, Result, Tensor};

use crate::device::CubeBackend;
use crate::kernels::round;

type T<R> = Tensor<CubeBackend<R>>;

impl<R: Runtime> CubeBackend<R> {
    /// The same backend with matrix products (and attention operands) in `precision`
    /// (§7.5), where the device has tensor cores for it; otherwise the backend stays in f32
    /// (see [`CubeBackend::tensor_cores`]) and [`Backend::precision`](rae_core::Backend::precision) says so.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let cores = precision != Precision::Fp32 && self.tensor_cores(precision);
        self.precision = if cores { precision } else { Precision::Fp32 };
        self.tensor_core_matmul = cores;
        self
    }

    /// The same backend computing as `precision` would, on any device: operands are
    /// rounded by a kernel and multiplied in f32, exactly like `CpuBackend` (no tensor
    /// cores, no speed-up). For testing the reduced-precision numerics where no tensor
    /// cores exist (lavapipe).
    pub fn with_emulated_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self.tensor_core_matmul = false;
        self
    }

    /// Whether matrix products run on tensor cores (see [`CubeBackend::with_precision`]).
    pub fn tensor_core_matmul(&self) -> bool {
        self.tensor_core_matmul
    }

    /// `x` with every value rounded to `precision` and kept as f32 (the operand rounding of
    /// §7.5, the same values as `rae_core::Precision::round`).
    pub fn rounded(&self, x: &T<R>, precision: Precision) -> Result<T<R>> {
        round::round(self, x, precision)
    }

    /// Whether the device multiplies `precision` operands on tensor cores with f32
    /// accumulation (always true for f32 itself).
    pub fn tensor_cores(&self, precision: Precision) -> bool {
        let operand = match precision {
            Precision::Fp32 => return true,
            Precision::Tf32 => cubecl::tf32::as_type_native_unchecked(),
            Precision::Bf16 => half::bf16::as_type_native_unchecked(),
        }
        .storage_type();
        let acc = f32::as_type_native_unchecked().storage_type();
        self.client()
            .features()
            .matmul
            .cmma
            .iter()
            .any(|c| c.a_type == operand && c.b_type == operand && c.cd_type == acc)
    }

    /// The operands of the fused attention: rounded to bf16 under [`Precision::Bf16`] (as
    /// autocast casts them; the kernel accumulates and keeps softmax statistics in f32),
    /// unchanged otherwise (tf32 applies to matrix products, not to our f32 attention).
    pub(crate) fn attention_operands(
        &self,
        q: &T<R>,
        k: &T<R>,
        v: &T<R>,
    ) -> Result<(T<R>, T<R>, T<R>)> {
        if self.precision != Precision::Bf16 {
            return Ok((q.clone(), k.clone(), v.clone()));
        }
        let p = self.precision;
        Ok((
            round::round(self, q, p)?,
            round::round(self, k, p)?,
            round::round(self, v, p)?,
        ))
    }
}
