//! The [`Backend`] trait: device memory plus every op the models need, each forward with
//! the backward that training needs.
//!
//! Ops take their inputs by reference and return new tensors; nothing writes into an input
//! except the optimiser updates, which take `&mut Tensor` and may replace its storage.
//! Shapes are validated by the helpers in [`crate::check`], shared by every backend, so a
//! shape mismatch gives the same error (naming both shapes) on CPU, WGPU and CUDA.

use alloc::string::String;
use alloc::vec::Vec;

use crate::check;
use crate::error::Result;
use crate::precision::Precision;
use crate::rng::PhiloxKey;
use crate::tensor::Tensor;

pub mod composite;
mod conv;
mod ops;
pub use conv::{Pool2d, Window2d};
pub use ops::{AdamWStep, Binary, PatchOrder, Reduce, Unary};

/// Per-row statistics that a normalisation saves for its backward.
#[derive(Debug, Clone)]
pub struct NormStats<B: Backend> {
    /// Row means `[rows]` (zeros for RMSNorm, which has none).
    pub mean: Tensor<B>,
    /// Row reciprocal standard deviations `[rows]`.
    pub rstd: Tensor<B>,
}

/// Gradients of a normalisation layer.
#[derive(Debug, Clone)]
pub struct NormGrads<B: Backend> {
    /// Gradient of the input.
    pub dx: Tensor<B>,
    /// Gradient of the scale, when the layer has one.
    pub dweight: Option<Tensor<B>>,
    /// Gradient of the shift, when the layer has one.
    pub dbias: Option<Tensor<B>>,
}

/// Gradients of the adaLN modulation `y = x ⊙ (1 + scale) + shift`.
#[derive(Debug, Clone)]
pub struct ModulateGrads<B: Backend> {
    /// Gradient of `x`.
    pub dx: Tensor<B>,
    /// Gradient of `shift` (same shape as `shift`), when a shift was given.
    pub dshift: Option<Tensor<B>>,
    /// Gradient of `scale` (same shape as `scale`), when a scale was given.
    pub dscale: Option<Tensor<B>>,
}

/// Gradients of a linear layer `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct LinearGrads<B: Backend> {
    /// Gradient of the input, same shape as the input.
    pub dx: Tensor<B>,
    /// Gradient of the weight `[out, in]`.
    pub dw: Tensor<B>,
    /// Gradient of the bias `[out]`, when the layer has one.
    pub db: Option<Tensor<B>>,
}

/// Gradients of attention with respect to `q`, `k`, `v`.
#[derive(Debug, Clone)]
pub struct AttentionGrads<B: Backend> {
    /// `[.., N, hd]`
    pub dq: Tensor<B>,
    /// `[.., N, hd]`
    pub dk: Tensor<B>,
    /// `[.., N, hd]`
    pub dv: Tensor<B>,
}

/// What [`Backend::attention_fused`] keeps for its backward.
#[derive(Debug, Clone)]
pub enum AttentionState<B: Backend> {
    /// The probabilities `[.., N, N]` (composite path), for [`Backend::attention_backward`].
    Probs(Tensor<B>),
    /// The row log-sum-exp `[.., N]` of the scaled scores, `P = exp(q·kᵀ·scale − lse)`, of
    /// a fused kernel that never stores `P`; for [`Backend::attention_fused_backward`].
    Lse(Tensor<B>),
}

/// Validates the arguments of [`Backend::attention_fused_backward`]: `q`, `k`, `v`, `o`,
/// `dout` of one shape `[.., N, hd]` and `lse` `[.., N]`.
pub fn check_attention_lse<B: Backend>(
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    o: &Tensor<B>,
    lse: &Tensor<B>,
    dout: &Tensor<B>,
) -> Result<()> {
    check::attention(q, k, v)?;
    let op = "attention_fused_backward (o, dout, lse vs q)";
    check::same_shape(op, q.shape(), o.shape())?;
    check::same_shape(op, q.shape(), dout.shape())?;
    let d = q.dims();
    check::same_shape(op, &crate::Shape::new(&d[..d.len() - 1])?, lse.shape())
}

/// The error of an op a backend does not implement.
fn unsupported<B: Backend>(b: &B, op: &str) -> crate::Error {
    crate::Error::backend(
        b.name(),
        alloc::format!("{op} is not implemented by this backend"),
    )
}

/// A compute device with its own memory and every op of the models.
///
/// Shapes follow spec §0: `[B, N, C]` tokens, `[B, C, H, W]` images, weights `[out, in]`.
/// Each method documents its shapes; a wrong shape is an [`crate::Error`] naming both
/// shapes, never a panic.
pub trait Backend: Clone + core::fmt::Debug + Send + Sync + 'static {
    /// A handle to device memory holding f32 values.
    type Storage: Clone + core::fmt::Debug + Send + Sync;

    /// A human-readable name: backend and device ("cpu", "wgpu: llvmpipe", ...).
    fn name(&self) -> String;

    /// The precision matrix products and attention run in (§7.5): what was asked for, or
    /// [`Precision::Fp32`] where the device cannot do better. Storage is always f32.
    fn precision(&self) -> Precision {
        Precision::Fp32
    }

    /// The most f32 values one buffer may hold on this device, where it has such a limit
    /// (WGPU's storage-binding size); `None` when only memory bounds it. Ops whose scratch
    /// could exceed it (the convolutions' im2col) split their work to stay within it.
    fn max_buffer_floats(&self) -> Option<usize> {
        None
    }

    // ------------------------------------------------------------------ memory

    /// Copies host data to a new device tensor of shape `dims`.
    fn upload(&self, data: &[f32], dims: &[usize]) -> Result<Tensor<Self>>;

    /// Copies a device tensor to the host.
    fn download(&self, x: &Tensor<Self>) -> Result<Vec<f32>>;

    /// A tensor of shape `dims` filled with `value`.
    fn full(&self, dims: &[usize], value: f32) -> Result<Tensor<Self>>;

    /// A tensor of zeros.
    fn zeros(&self, dims: &[usize]) -> Result<Tensor<Self>> {
        self.full(dims, 0.0)
    }

    /// Waits until queued work is done (a no-op on synchronous backends).
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    // ------------------------------------------------------------- elementwise

    /// `f(x)` element-wise.
    fn unary(&self, op: Unary, x: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// `dy ⊙ f'(x)` element-wise: the backward of [`Backend::unary`].
    fn unary_backward(
        &self,
        op: Unary,
        x: &Tensor<Self>,
        dy: &Tensor<Self>,
    ) -> Result<Tensor<Self>>;

    /// `a ∘ b` element-wise on equal shapes (residual add, products).
    fn binary(&self, op: Binary, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// `alpha · x`.
    fn scale(&self, x: &Tensor<Self>, alpha: f32) -> Result<Tensor<Self>>;

    /// `alpha · x + y` on equal shapes.
    fn axpy(&self, alpha: f32, x: &Tensor<Self>, y: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// Broadcast affine map over the middle axis of the `[outer, mid, inner]` view `dims`
    /// of `x`: `y[o, m, i] = x[o, m, i] · a[m] + b[m]`, with `a`, `b` of `mid` elements
    /// (absent means 1 and 0). Covers bias adds (`[rows, C, 1]`), LayerScale, latent
    /// normalisation (`[B, C·H·W, 1]`), per-channel image standardisation (`[B, 3, H·W]`)
    /// and per-sample scaling (`[1, B, rest]`).
    fn bcast_affine(
        &self,
        x: &Tensor<Self>,
        a: Option<&Tensor<Self>>,
        b: Option<&Tensor<Self>>,
        dims: [usize; 3],
    ) -> Result<Tensor<Self>>;

    /// Reduces the middle axis of the `[outer, mid, inner]` view `dims` of `x`; the result
    /// has shape `[outer, inner]`.
    fn reduce(&self, op: Reduce, x: &Tensor<Self>, dims: [usize; 3]) -> Result<Tensor<Self>>;

    // ------------------------------------------------------------------ matmul

    /// Batched matrix product `op(a) · op(b)` where `op` transposes the last two axes when
    /// its flag is set. `a` is `[..batch, M, K]` (or `[..batch, K, M]` with `ta`); `b` is
    /// `[..batch, K, N]` (or `[..batch, N, K]` with `tb`) or rank 2, broadcast over the
    /// batch. The result is `[..batch, M, N]`.
    fn matmul(
        &self,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        ta: bool,
        tb: bool,
    ) -> Result<Tensor<Self>>;

    // ------------------------------------------------------------------- norms

    /// LayerNorm over the last axis with biased variance (§0), then the optional affine
    /// `γ·x̂ + β` (`[C]` each). Returns the output and the per-row statistics.
    fn layernorm(
        &self,
        x: &Tensor<Self>,
        gamma: Option<&Tensor<Self>>,
        beta: Option<&Tensor<Self>>,
        eps: f32,
    ) -> Result<(Tensor<Self>, NormStats<Self>)>;

    /// Backward of [`Backend::layernorm`]; `dweight`/`dbias` are returned when `gamma`/`beta`
    /// were given.
    fn layernorm_backward(
        &self,
        x: &Tensor<Self>,
        stats: &NormStats<Self>,
        gamma: Option<&Tensor<Self>>,
        has_beta: bool,
        dy: &Tensor<Self>,
    ) -> Result<NormGrads<Self>>;

    /// RMSNorm `x / sqrt(mean(x²) + eps) · w` over the last axis (§3.3).
    fn rmsnorm(
        &self,
        x: &Tensor<Self>,
        weight: Option<&Tensor<Self>>,
        eps: f32,
    ) -> Result<(Tensor<Self>, NormStats<Self>)>;

    /// Backward of [`Backend::rmsnorm`].
    fn rmsnorm_backward(
        &self,
        x: &Tensor<Self>,
        stats: &NormStats<Self>,
        weight: Option<&Tensor<Self>>,
        dy: &Tensor<Self>,
    ) -> Result<NormGrads<Self>>;

    /// Softmax over the last axis.
    fn softmax(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// Backward of softmax from its output `y`: `dx = y ⊙ (dy − Σ dy ⊙ y)`.
    fn softmax_backward(&self, y: &Tensor<Self>, dy: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// `softmax(x·scale)` over the last axis (attention's scaled scores). The default scales
    /// then applies [`Backend::softmax`]; a backend may fold the scale into its kernel.
    fn softmax_scaled(&self, x: &Tensor<Self>, scale: f32) -> Result<Tensor<Self>> {
        let s = self.scale(x, scale)?;
        self.softmax(&s)
    }

    /// Backward of [`Backend::softmax_scaled`] with respect to `x`, from its output `y`:
    /// `scale · softmax_backward(y, dy)`.
    fn softmax_scaled_backward(
        &self,
        y: &Tensor<Self>,
        dy: &Tensor<Self>,
        scale: f32,
    ) -> Result<Tensor<Self>> {
        let ds = self.softmax_backward(y, dy)?;
        self.scale(&ds, scale)
    }

    // ---------------------------------------------------------- transformer ops

    /// Rotary embedding in the adjacent-pair layout of §3.4 on `x` `[.., N, hd]` with tables
    /// `cos`, `sin` `[N, hd]`: `y = x ⊙ cos + rot(x) ⊙ sin`, `rot(x)[2p] = −x[2p+1]`,
    /// `rot(x)[2p+1] = x[2p]`. With `inverse` the angle is negated, which is the backward.
    fn rope(
        &self,
        x: &Tensor<Self>,
        cos: &Tensor<Self>,
        sin: &Tensor<Self>,
        inverse: bool,
    ) -> Result<Tensor<Self>>;

    /// SwiGLU gate `SiLU(u1) ⊙ u2` where `u = [u1 | u2]` on the last axis (§3.3):
    /// `[.., 2H] → [.., H]`.
    fn swiglu(&self, u: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// Backward of [`Backend::swiglu`]: `du` `[.., 2H]` from `u` and `dy` `[.., H]`.
    fn swiglu_backward(&self, u: &Tensor<Self>, dy: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// adaLN modulation `y = x ⊙ (1 + scale) + shift` (§3.3) on `x` `[B, N, C]` with
    /// `shift`, `scale` `[B, Nc, C]`, `N` a multiple of `Nc`; conditioning token `k` applies
    /// to the `N/Nc` consecutive tokens `k·N/Nc ..`. `Nc = 1` is per-sample conditioning,
    /// `Nc = N` per-token. Either may be absent (0).
    fn modulate(
        &self,
        x: &Tensor<Self>,
        shift: Option<&Tensor<Self>>,
        scale: Option<&Tensor<Self>>,
    ) -> Result<Tensor<Self>>;

    /// Backward of [`Backend::modulate`].
    fn modulate_backward(
        &self,
        x: &Tensor<Self>,
        shift: Option<&Tensor<Self>>,
        scale: Option<&Tensor<Self>>,
        dy: &Tensor<Self>,
    ) -> Result<ModulateGrads<Self>>;

    /// adaLN gate `y = x ⊙ g` with `g` `[B, Nc, C]` broadcast as in [`Backend::modulate`].
    fn gate(&self, x: &Tensor<Self>, g: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// Backward of [`Backend::gate`]: `(dx, dg)`.
    fn gate_backward(
        &self,
        x: &Tensor<Self>,
        g: &Tensor<Self>,
        dy: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>)>;

    /// Embedding lookup: rows `idx` of `table` `[V, C]` → `[idx.len(), C]`. An index
    /// outside the table is an error.
    fn gather_rows(&self, table: &Tensor<Self>, idx: &[u32]) -> Result<Tensor<Self>>;

    /// Backward of [`Backend::gather_rows`]: `out[idx[i]] += dy[i]` into `[rows, C]` zeros.
    fn scatter_add_rows(&self, dy: &Tensor<Self>, idx: &[u32], rows: usize)
        -> Result<Tensor<Self>>;

    /// Gaussian Fourier time features (§3.2): `t` `[B]`, `w` `[F]` →
    /// `[sin(2π·t·w) | cos(2π·t·w)]` `[B, 2F]`.
    fn fourier_features(&self, t: &Tensor<Self>, w: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ------------------------------------------------------------------ layout

    /// Images `[B, C, H, W]` to patch tokens `[B, (H/p)·(W/p), p·p·C]`, tokens row-major
    /// over the patch grid, values inside a patch in `order`.
    fn patchify(&self, x: &Tensor<Self>, p: usize, order: PatchOrder) -> Result<Tensor<Self>>;

    /// Inverse of [`Backend::patchify`]: tokens `[B, gh·gw, p·p·C]` → `[B, C, gh·p, gw·p]`.
    fn unpatchify(
        &self,
        x: &Tensor<Self>,
        channels: usize,
        grid: (usize, usize),
        p: usize,
        order: PatchOrder,
    ) -> Result<Tensor<Self>>;

    /// `[A, B, C, D] → [A, C, B, D]`: head split/merge (`[B, N, H, hd] ↔ [B, H, N, hd]`) and,
    /// with `D = 1`, batched transposes such as `[B, N, C] ↔ [B, C, N]`.
    fn permute0213(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;

    /// Slice `[start, start + len)` of the middle axis of the `[A, B, C]` view `dims` of `x`
    /// → `[A, len, C]`. Token slicing (`dims = [B, N, C]`) and `chunk` on the last axis
    /// (`dims = [rows, k, C/k]`).
    fn slice_mid(
        &self,
        x: &Tensor<Self>,
        dims: [usize; 3],
        start: usize,
        len: usize,
    ) -> Result<Tensor<Self>>;

    /// Concatenates tensors along the middle axis of `[outer, B_i, inner]` views: each
    /// `xs[i]` has `outer · B_i · inner` elements. Result `[outer, Σ B_i, inner]`.
    fn concat_mid(&self, xs: &[&Tensor<Self>], outer: usize, inner: usize) -> Result<Tensor<Self>>;

    // ------------------------------------------------------- 2-D windows (NCHW)

    /// im2col: `x` `[n, c, h, w]` → `[n, ho·wo, c·kh·kw]`, column index
    /// `(ci·kh + i)·kw + j`, zero outside the input.
    fn im2col(&self, x: &Tensor<Self>, g: Window2d) -> Result<Tensor<Self>> {
        let _ = (x, g);
        Err(unsupported(self, "im2col"))
    }

    /// The adjoint of [`Backend::im2col`]: `cols` `[n, ho·wo, c·kh·kw]` → `[n, c, h, w]`,
    /// overlapping contributions summed (the gradient of im2col).
    fn col2im(&self, cols: &Tensor<Self>, g: Window2d) -> Result<Tensor<Self>> {
        let _ = (cols, g);
        Err(unsupported(self, "col2im"))
    }

    /// Max or average pooling: `x` `[n, c, h, w]` → `[n, c, ho, wo]` (max ignores padding;
    /// PyTorch semantics, padding at most half the window).
    fn pool2d(&self, x: &Tensor<Self>, g: Window2d, kind: Pool2d) -> Result<Tensor<Self>> {
        let _ = (x, g, kind);
        Err(unsupported(self, "pool2d"))
    }

    /// Gradient of [`Backend::pool2d`] with respect to `x` (max: to the first maximal
    /// element of each window in row-major order, as PyTorch's CPU kernel does).
    fn pool2d_backward(
        &self,
        x: &Tensor<Self>,
        dy: &Tensor<Self>,
        g: Window2d,
        kind: Pool2d,
    ) -> Result<Tensor<Self>> {
        let _ = (x, dy, g, kind);
        Err(unsupported(self, "pool2d_backward"))
    }

    // --------------------------------------------------------------- optimiser

    /// One AdamW step (see [`AdamWStep`]) on `param` with moments `m`, `v`, all the same
    /// shape as `grad`. Updates the three tensors (their storage may be replaced).
    fn adamw_step(
        &self,
        param: &mut Tensor<Self>,
        grad: &Tensor<Self>,
        m: &mut Tensor<Self>,
        v: &mut Tensor<Self>,
        hp: &AdamWStep,
    ) -> Result<()>;

    /// EMA update `ema ← decay·ema + (1 − decay)·param`.
    fn ema_update(&self, ema: &mut Tensor<Self>, param: &Tensor<Self>, decay: f32) -> Result<()>;

    // --------------------------------------------------------------------- rng

    /// Uniform `(0, 1)` values from Philox4x32-10, element `i` taken from counter position
    /// `offset + i` of `key` (see [`crate::rng`] for the exact mapping).
    fn fill_uniform(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<Tensor<Self>>;

    /// Standard-normal values from Philox4x32-10 by Box–Muller, addressed like
    /// [`Backend::fill_uniform`] (see [`crate::rng`]).
    fn fill_normal(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<Tensor<Self>>;

    // ------------------------------------------------------- composite defaults

    /// Linear layer `y = x·Wᵀ + b`: `x` `[.., in]`, `w` `[out, in]`, `b` `[out]`.
    fn linear(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        b: Option<&Tensor<Self>>,
    ) -> Result<Tensor<Self>> {
        let (rows, _inp, out) = check::linear(x, w, b)?;
        let x2 = x.reshape(&[rows, x.shape().last()])?;
        let y = self.matmul(&x2, w, false, true)?;
        let y = match b {
            Some(b) => self.bcast_affine(&y, None, Some(b), [rows, out, 1])?,
            None => y,
        };
        y.reshape(x.shape().with_last(out).dims())
    }

    /// Backward of [`Backend::linear`].
    fn linear_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        has_bias: bool,
        dy: &Tensor<Self>,
    ) -> Result<LinearGrads<Self>> {
        let (rows, inp, out) = check::linear(x, w, None)?;
        check::same_shape("linear_backward", &x.shape().with_last(out), dy.shape())?;
        let dy2 = dy.reshape(&[rows, out])?;
        let x2 = x.reshape(&[rows, inp])?;
        let dx = self.matmul(&dy2, w, false, false)?.reshape(x.dims())?;
        let dw = self.matmul(&dy2, &x2, true, false)?;
        let db = if has_bias {
            Some(
                self.reduce(Reduce::Sum, &dy2, [1, rows, out])?
                    .reshape(&[out])?,
            )
        } else {
            None
        };
        Ok(LinearGrads { dx, dw, db })
    }

    /// Scaled dot-product attention `softmax(q·kᵀ·scale)·v` on `[.., N, hd]` tensors (no
    /// mask). Returns the output and the attention probabilities `[.., N, N]`, which the
    /// backward needs.
    fn attention(
        &self,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        scale: f32,
    ) -> Result<(Tensor<Self>, Tensor<Self>)> {
        composite::attention(self, q, k, v, scale)
    }

    /// Backward of [`Backend::attention`] from the saved probabilities `p`.
    fn attention_backward(
        &self,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        p: &Tensor<Self>,
        dout: &Tensor<Self>,
        scale: f32,
    ) -> Result<AttentionGrads<Self>> {
        composite::attention_backward(self, q, k, v, p, dout, scale)
    }

    /// [`Backend::attention`] for training, keeping what the backend chooses for the
    /// backward: the probabilities (this default) or, for a fused kernel, only the row
    /// log-sum-exp ([`AttentionState::Lse`]: `O(N)` instead of `O(N²)` per head).
    fn attention_fused(
        &self,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        scale: f32,
    ) -> Result<(Tensor<Self>, AttentionState<Self>)> {
        let (o, p) = self.attention(q, k, v, scale)?;
        Ok((o, AttentionState::Probs(p)))
    }

    /// Backward of [`Backend::attention_fused`] after [`AttentionState::Lse`], from its output
    /// `o` and `lse`. This default recomputes the probabilities with the composite forward;
    /// a fused backend recomputes them block by block from `lse`, with `rowsum(dout ⊙ o)`.
    fn attention_fused_backward(
        &self,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        o: &Tensor<Self>,
        lse: &Tensor<Self>,
        dout: &Tensor<Self>,
        scale: f32,
    ) -> Result<AttentionGrads<Self>> {
        check_attention_lse(q, k, v, o, lse, dout)?;
        let (_, p) = self.attention(q, k, v, scale)?;
        self.attention_backward(q, k, v, &p, dout, scale)
    }

    /// Sum of all elements as a `[1]` tensor.
    fn sum_all(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        self.reduce(Reduce::Sum, x, [1, x.numel(), 1])?
            .reshape(&[1])
    }

    /// Sum of squares of all elements as a `[1]` tensor.
    fn sum_sq_all(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        self.reduce(Reduce::SumSq, x, [1, x.numel(), 1])?
            .reshape(&[1])
    }

    /// Mean of all elements as a `[1]` tensor.
    fn mean_all(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        self.reduce(Reduce::Mean, x, [1, x.numel(), 1])?
            .reshape(&[1])
    }

    /// Downloads a one-element tensor as a scalar.
    fn scalar(&self, x: &Tensor<Self>) -> Result<f32> {
        let v = self.download(x)?;
        match v.as_slice() {
            [s] => Ok(*s),
            _ => Err(crate::Error::bad_shape(
                "scalar",
                x.shape(),
                "expected exactly one element",
            )),
        }
    }
}
