//! The small value types that name what a [`Backend`](super::Backend) op computes: the
//! element-wise functions, reductions, patch orders and one AdamW step's settings.

/// Element-wise functions with a derivative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unary {
    /// `x · sigmoid(x)` (spec §0).
    Silu,
    /// Exact GELU `0.5·x·(1 + erf(x/√2))` (spec §0).
    GeluErf,
    /// GELU with the tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `1 / (1 + exp(−x))`.
    Sigmoid,
    /// `x · x`.
    Square,
    /// `|x|` (derivative `sign(x)`, 0 at 0): the L1 reconstruction loss of §2.7.2.
    Abs,
    /// `max(x, 0)` (NaN stays NaN); derivative 1 where `x > 0`, else 0 (PyTorch's, 0 at 0):
    /// the FID Inception's activation.
    Relu,
    /// `x` where `x > 0`, else `0.2·x` (NaN stays NaN): LeakyReLU with the slope of the
    /// discriminator heads (§2.7.4); derivative 1 where `x > 0`, else 0.2 (PyTorch's).
    LeakyRelu,
}

/// Element-wise binary operations on two tensors of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
}

/// Reductions over the middle axis of an `[outer, mid, inner]` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduce {
    /// `Σ x`
    Sum,
    /// `Σ x²`
    SumSq,
    /// `Σ x / mid`
    Mean,
}

/// The order of the values inside one flattened patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchOrder {
    /// `(channel, row, column)`, column fastest: the layout of a flattened conv weight
    /// `[C_out, C_in, p, p]`, so a stride-`p` conv is `patchify` then a linear map.
    ChannelFirst,
    /// `(row, column, channel)`, channel fastest: the decoder's unpatchify layout (§2.6.2).
    ChannelLast,
}

/// One AdamW update's scalars (PyTorch semantics: decoupled decay, bias correction).
///
/// `p ← p − lr·wd·p;  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;`
/// `p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)`, with
/// `g = grad_scale · grad` (the global-norm clipping factor folded in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// 1-based step number for the bias correction.
    pub step: u64,
    /// Factor applied to the gradient first (gradient clipping, loss scaling).
    pub grad_scale: f32,
}

impl AdamWStep {
    /// `1 − β1^t` and `1 − β2^t`, computed in f64 and rounded once.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = self.step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - libm::pow(self.beta1 as f64, t as f64);
        let bc2 = 1.0 - libm::pow(self.beta2 as f64, t as f64);
        (bc1 as f32, bc2 as f32)
    }
}
