//! `Linear`: `y = x·Wᵀ + b` with the weight stored `[out, in]` (§0). A conv patch
//! embedding or a `[out, in, 1, 1]` 1×1 conv is the same map with the weight reshaped.

use alloc::format;

use super::{Grads, Init, Module, Param};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// A linear layer; its weight may be stored with trailing conv axes (`[out, in, kh, kw]`),
/// which are flattened into `in`.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `{prefix}.weight`, `[out, in]` or `[out, c, kh, kw]`.
    pub weight: Param<B>,
    /// `{prefix}.bias`, `[out]`.
    pub bias: Option<Param<B>>,
}

impl<B: Backend> Linear<B> {
    /// A layer named `prefix` with weight of shape `wdims` (`[out, ...]`), PyTorch's
    /// default init `U(−1/√fan_in, 1/√fan_in)` for weight and bias (§3.7, §2.6.5).
    pub fn new(b: &B, init: &mut Init, prefix: &str, wdims: &[usize], bias: bool) -> Result<Self> {
        let fan_in: usize = wdims[1..].iter().product();
        let bound = 1.0 / libm::sqrtf(fan_in.max(1) as f32);
        let weight = Param::new(
            format!("{prefix}.weight"),
            init.uniform(b, wdims, -bound, bound)?,
        );
        let bias = if bias {
            Some(Param::new(
                format!("{prefix}.bias"),
                init.uniform(b, &[wdims[0]], -bound, bound)?,
            ))
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.value.dims()[0]
    }

    /// Input width (product of the weight's trailing axes).
    pub fn in_features(&self) -> usize {
        self.weight.value.dims()[1..].iter().product()
    }

    fn w2(&self) -> Result<Tensor<B>> {
        self.weight
            .value
            .reshape(&[self.out_features(), self.in_features()])
    }

    /// `x` `[.., in]` → `[.., out]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        b.linear(x, &self.w2()?, self.bias.as_ref().map(|p| &p.value))
    }

    /// Backward from the saved input `x`; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let frozen = !self.weight.trainable() && self.bias.as_ref().is_none_or(|p| !p.trainable());
        if frozen {
            // A frozen layer (the discriminator's backbone) needs only `dx = dy·W`.
            let out = self.out_features();
            let rows = dy.numel() / out.max(1);
            crate::check::same_shape(
                "linear backward (dy vs x)",
                &x.shape().with_last(out),
                dy.shape(),
            )?;
            let dx = b.matmul(&dy.reshape(&[rows, out])?, &self.w2()?, false, false)?;
            return dx.reshape(x.dims());
        }
        let g = b.linear_backward(x, &self.w2()?, self.bias.is_some(), dy)?;
        grads.add(b, &self.weight, g.dw)?;
        if let (Some(p), Some(db)) = (&self.bias, g.db) {
            grads.add(b, p, db)?;
        }
        Ok(g.dx)
    }

    /// Sets weight and bias to zero (the adaLN-Zero and final-layer inits of §3.7).
    pub fn zero(&mut self, b: &B) -> Result<()> {
        self.weight.value = b.zeros(self.weight.value.dims())?;
        if let Some(p) = &mut self.bias {
            p.value = b.zeros(p.value.dims())?;
        }
        Ok(())
    }
}

impl<B: Backend> Module<B> for Linear<B> {
    crate::module_params!(weight, bias);
}
