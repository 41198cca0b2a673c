//! The discriminator heads (§2.7.4): spectrally normalised circular 1-D convolutions,
//! BatchNormLocal and LeakyReLU(0.2), with explicit backward.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::{Backend, Binary, NormStats, Reduce, Unary};
use crate::error::{Error, Result};
use crate::nn::{conv1d_circular, conv1d_circular_backward, Grads, Init, Module, Param};
use crate::tensor::Tensor;

/// PyTorch's `spectral_norm` epsilon.
const SN_EPS: f32 = 1e-12;

/// `x / max(‖x‖, eps)` in place (PyTorch's `F.normalize`).
fn normalize(x: &mut [f32]) {
    let n = libm::sqrtf(x.iter().map(|v| v * v).sum::<f32>());
    let d = if n > SN_EPS { n } else { SN_EPS };
    for v in x.iter_mut() {
        *v /= d;
    }
}

/// A `Conv1d` with spectral normalisation of its weight (one power iteration per training
/// forward, `dim = 0`): `weight_orig` `[o, c, k]`, buffers `weight_u` `[o]` and `weight_v`
/// `[c·k]`, `bias` `[o]`. Circular padding `k/2`.
#[derive(Debug, Clone)]
pub struct SnConv1d<B: Backend> {
    /// `{prefix}.weight_orig` (trained).
    pub weight_orig: Param<B>,
    /// `{prefix}.weight_u` (buffer, updated by the power iteration).
    pub weight_u: Param<B>,
    /// `{prefix}.weight_v` (buffer, updated by the power iteration).
    pub weight_v: Param<B>,
    /// `{prefix}.bias`.
    pub bias: Param<B>,
}

/// What an [`SnConv1d`] forward keeps.
#[derive(Debug, Clone)]
pub struct SnSaved<B: Backend> {
    x: Tensor<B>,
    w_sn: Tensor<B>,
    sigma: f32,
}

impl<B: Backend> SnConv1d<B> {
    /// PyTorch's default init: weight and bias `U(±1/√(c·k))`; `u`, `v` normalised normal
    /// draws.
    pub fn new(b: &B, init: &mut Init, prefix: &str, o: usize, c: usize, k: usize) -> Result<Self> {
        let fan_in = c * k;
        let bound = 1.0 / libm::sqrtf(fan_in.max(1) as f32);
        let mut unit = |n: usize| -> Result<Tensor<B>> {
            let t = init.normal(b, &[n], 1.0)?;
            let mut v = b.download(&t)?;
            normalize(&mut v);
            b.upload(&v, &[n])
        };
        let weight_u = Param::buffer(format!("{prefix}.weight_u"), unit(o)?);
        let weight_v = Param::buffer(format!("{prefix}.weight_v"), unit(fan_in)?);
        Ok(SnConv1d {
            weight_orig: Param::new(
                format!("{prefix}.weight_orig"),
                init.uniform(b, &[o, c, k], -bound, bound)?,
            ),
            weight_u,
            weight_v,
            bias: Param::new(
                format!("{prefix}.bias"),
                init.uniform(b, &[o], -bound, bound)?,
            ),
        })
    }

    /// `(o, c·k)` of the weight.
    fn wdims(&self) -> Result<(usize, usize)> {
        match *self.weight_orig.value.dims() {
            [o, c, k] => Ok((o, c * k)),
            _ => Err(Error::bad_shape(
                "spectral norm weight",
                self.weight_orig.value.shape(),
                format!("{}: expected [out, in, k]", self.weight_orig.name),
            )),
        }
    }

    fn w2(&self) -> Result<Tensor<B>> {
        let (o, ck) = self.wdims()?;
        self.weight_orig.value.reshape(&[o, ck])
    }

    /// One power iteration: `v = normalize(Wᵀu)`, `u = normalize(W v)`; updates the buffers.
    pub fn power_iteration(&mut self, b: &B) -> Result<()> {
        let (o, ck) = self.wdims()?;
        self.check_uv(o, ck)?;
        let w = self.w2()?;
        let u = self.weight_u.value.reshape(&[o, 1])?;
        let mut v = b.download(&b.matmul(&w, &u, true, false)?)?;
        normalize(&mut v);
        let vt = b.upload(&v, &[ck, 1])?;
        let mut u = b.download(&b.matmul(&w, &vt, false, false)?)?;
        normalize(&mut u);
        self.weight_u.value = b.upload(&u, &[o])?;
        self.weight_v.value = b.upload(&v, &[ck])?;
        Ok(())
    }

    fn check_uv(&self, o: usize, ck: usize) -> Result<()> {
        for (p, n) in [(&self.weight_u, o), (&self.weight_v, ck)] {
            if p.value.numel() != n {
                return Err(Error::bad_shape(
                    "spectral norm vector",
                    p.value.shape(),
                    format!("{}: expected {n} elements", p.name),
                ));
            }
        }
        Ok(())
    }

    /// `σ = uᵀ W v` from the stored vectors.
    pub fn sigma(&self, b: &B) -> Result<f32> {
        let (o, ck) = self.wdims()?;
        self.check_uv(o, ck)?;
        let wv = b.matmul(
            &self.w2()?,
            &self.weight_v.value.reshape(&[ck, 1])?,
            false,
            false,
        )?;
        let wv = b.download(&wv)?;
        let u = b.download(&self.weight_u.value)?;
        let s: f32 = u.iter().zip(&wv).map(|(a, c)| a * c).sum();
        if !s.is_finite() || s == 0.0 {
            return Err(Error::invalid(
                format!("spectral norm of {}", self.weight_orig.name),
                format!("sigma = {s} is not a usable divisor"),
            ));
        }
        Ok(s)
    }

    /// The normalised weight `W / σ` (no power iteration).
    pub fn weight_sn(&self, b: &B) -> Result<(Tensor<B>, f32)> {
        let sigma = self.sigma(b)?;
        Ok((b.scale(&self.weight_orig.value, 1.0 / sigma)?, sigma))
    }

    /// `x` `[n, c, l]` → `[n, o, l]` with the stored `u`, `v`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, SnSaved<B>)> {
        let (w_sn, sigma) = self.weight_sn(b)?;
        let y = conv1d_circular(b, x, &w_sn, Some(&self.bias.value))?;
        Ok((
            y,
            SnSaved {
                x: x.clone(),
                w_sn,
                sigma,
            },
        ))
    }

    /// `dL/dW = G/σ − (⟨G, W⟩/σ²)·u vᵀ` for `G = dL/dW_sn` (`u`, `v` constants).
    pub fn weight_grad(&self, b: &B, g: &Tensor<B>, sigma: f32) -> Result<Tensor<B>> {
        let (o, ck) = self.wdims()?;
        let gw = b.scalar(&b.sum_all(&b.binary(Binary::Mul, g, &self.weight_orig.value)?)?)?;
        let uv = b.matmul(
            &self.weight_u.value.reshape(&[o, 1])?,
            &self.weight_v.value.reshape(&[1, ck])?,
            false,
            false,
        )?;
        let g = b.scale(&g.reshape(&[o, ck])?, 1.0 / sigma)?;
        b.axpy(-gw / (sigma * sigma), &uv, &g)?
            .reshape(self.weight_orig.value.dims())
    }

    /// Adds the gradients of `weight_orig` and `bias`; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &SnSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let g = conv1d_circular_backward(b, &s.x, &s.w_sn, true, dy)?;
        grads.add(
            b,
            &self.weight_orig,
            self.weight_grad(b, &g.dweight, s.sigma)?,
        )?;
        if let Some(db) = g.dbias {
            grads.add(b, &self.bias, db)?;
        }
        Ok(g.dx)
    }
}

impl<B: Backend> Module<B> for SnConv1d<B> {
    crate::module_params!(weight_orig, bias, weight_u, weight_v);
}

/// BatchNormLocal (virtual batch 1): per sample and channel, normalise over the positions
/// (biased variance), then a per-channel affine `weight`, `bias` `[C]`.
#[derive(Debug, Clone)]
pub struct BatchNormLocal<B: Backend> {
    /// `{prefix}.weight` (init 1).
    pub weight: Param<B>,
    /// `{prefix}.bias` (init 0).
    pub bias: Param<B>,
    /// Variance epsilon.
    pub eps: f32,
}

/// What a [`BatchNormLocal`] forward keeps.
#[derive(Debug, Clone)]
pub struct BnlSaved<B: Backend> {
    x: Tensor<B>,
    xhat: Tensor<B>,
    stats: NormStats<B>,
}

/// `(n, c, l)` of a `[n, c, l]` tensor.
fn ncl<B: Backend>(op: &'static str, x: &Tensor<B>) -> Result<(usize, usize, usize)> {
    match *x.dims() {
        [n, c, l] => Ok((n, c, l)),
        _ => Err(Error::bad_shape(op, x.shape(), "expected [n, c, l]")),
    }
}

impl<B: Backend> BatchNormLocal<B> {
    /// `γ = 1`, `β = 0` over `c` channels.
    pub fn new(b: &B, prefix: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(BatchNormLocal {
            weight: Param::new(format!("{prefix}.weight"), b.full(&[c], 1.0)?),
            bias: Param::new(format!("{prefix}.bias"), b.zeros(&[c])?),
            eps,
        })
    }

    /// `x` `[n, c, l]` → `[n, c, l]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, BnlSaved<B>)> {
        let (n, c, l) = ncl("batch norm local", x)?;
        let x2 = x.reshape(&[n * c, l])?;
        let (xhat, stats) = b.layernorm(&x2, None, None, self.eps)?;
        let y = b.bcast_affine(
            &xhat,
            Some(&self.weight.value),
            Some(&self.bias.value),
            [n, c, l],
        )?;
        Ok((y.reshape(&[n, c, l])?, BnlSaved { x: x2, xhat, stats }))
    }

    /// Adds the affine's gradients; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &BnlSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let (n, c, l) = ncl("batch norm local gradient", dy)?;
        let per_channel = |t: &Tensor<B>| -> Result<Tensor<B>> {
            let over_n = b.reduce(Reduce::Sum, t, [1, n, c * l])?;
            b.reduce(Reduce::Sum, &over_n, [c, l, 1])?.reshape(&[c])
        };
        if self.weight.trainable() {
            let prod = b.binary(Binary::Mul, dy, &s.xhat.reshape(&[n, c, l])?)?;
            grads.add(b, &self.weight, per_channel(&prod)?)?;
        }
        if self.bias.trainable() {
            grads.add(b, &self.bias, per_channel(dy)?)?;
        }
        let dxhat = b.bcast_affine(dy, Some(&self.weight.value), None, [n, c, l])?;
        let g = b.layernorm_backward(&s.x, &s.stats, None, false, &dxhat.reshape(&[n * c, l])?)?;
        g.dx.reshape(&[n, c, l])
    }
}

impl<B: Backend> Module<B> for BatchNormLocal<B> {
    crate::module_params!(weight, bias);
}

/// One head: `h = LReLU(BNL(SNconv₁(a)))`, `f = LReLU(BNL(SNconv_k(h)))`,
/// `r = (f + h)/√2`, `out = SNconv_out(r)` → `[B, N]`.
#[derive(Debug, Clone)]
pub struct DiscHead<B: Backend> {
    /// `heads.{i}.0.0`
    pub conv1: SnConv1d<B>,
    /// `heads.{i}.0.1`
    pub norm1: BatchNormLocal<B>,
    /// `heads.{i}.1.fn.0`
    pub conv2: SnConv1d<B>,
    /// `heads.{i}.1.fn.1`
    pub norm2: BatchNormLocal<B>,
    /// `heads.{i}.2`
    pub out: SnConv1d<B>,
}

/// What a [`DiscHead`] forward keeps.
#[derive(Debug, Clone)]
pub struct HeadSaved<B: Backend> {
    c1: SnSaved<B>,
    n1: BnlSaved<B>,
    p1: Tensor<B>,
    c2: SnSaved<B>,
    n2: BnlSaved<B>,
    p2: Tensor<B>,
    c3: SnSaved<B>,
}

const RES_RATIO: f32 = core::f32::consts::FRAC_1_SQRT_2;

impl<B: Backend> DiscHead<B> {
    /// A head named `prefix` (`heads.{i}`) over `c` channels with a `ks` residual kernel.
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        c: usize,
        ks: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(DiscHead {
            conv1: SnConv1d::new(b, init, &format!("{prefix}.0.0"), c, c, 1)?,
            norm1: BatchNormLocal::new(b, &format!("{prefix}.0.1"), c, eps)?,
            conv2: SnConv1d::new(b, init, &format!("{prefix}.1.fn.0"), c, c, ks)?,
            norm2: BatchNormLocal::new(b, &format!("{prefix}.1.fn.1"), c, eps)?,
            out: SnConv1d::new(b, init, &format!("{prefix}.2"), 1, c, 1)?,
        })
    }

    /// The three spectrally normalised convolutions.
    pub fn sn_convs_mut(&mut self) -> [&mut SnConv1d<B>; 3] {
        [&mut self.conv1, &mut self.conv2, &mut self.out]
    }

    /// `a` `[B, C, N]` → `[B, N]`.
    pub fn forward(&self, b: &B, a: &Tensor<B>) -> Result<(Tensor<B>, HeadSaved<B>)> {
        let (y1, c1) = self.conv1.forward(b, a)?;
        let (p1, n1) = self.norm1.forward(b, &y1)?;
        let h = b.unary(Unary::LeakyRelu, &p1)?;
        let (y2, c2) = self.conv2.forward(b, &h)?;
        let (p2, n2) = self.norm2.forward(b, &y2)?;
        let f = b.unary(Unary::LeakyRelu, &p2)?;
        let r = b.scale(&b.binary(Binary::Add, &f, &h)?, RES_RATIO)?;
        let (out, c3) = self.out.forward(b, &r)?;
        let d = out.dims();
        let out = out.reshape(&[d[0], d[2]])?;
        Ok((
            out,
            HeadSaved {
                c1,
                n1,
                p1,
                c2,
                n2,
                p2,
                c3,
            },
        ))
    }

    /// From `dout` `[B, N]`: adds the head's parameter gradients and returns `da`.
    pub fn backward(
        &self,
        b: &B,
        s: &HeadSaved<B>,
        dout: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let d = dout.dims().to_vec();
        let dout = dout.reshape(&[d[0], 1, d[d.len() - 1]])?;
        let dr = self.out.backward(b, &s.c3, &dout, grads)?;
        let dsum = b.scale(&dr, RES_RATIO)?;
        let dp2 = b.unary_backward(Unary::LeakyRelu, &s.p2, &dsum)?;
        let dy2 = self.norm2.backward(b, &s.n2, &dp2, grads)?;
        let dh = self.conv2.backward(b, &s.c2, &dy2, grads)?;
        let dh = b.binary(Binary::Add, &dh, &dsum)?;
        let dp1 = b.unary_backward(Unary::LeakyRelu, &s.p1, &dh)?;
        let dy1 = self.norm1.backward(b, &s.n1, &dp1, grads)?;
        self.conv1.backward(b, &s.c1, &dy1, grads)
    }
}

impl<B: Backend> Module<B> for DiscHead<B> {
    crate::module_params!(conv1, norm1, conv2, norm2, out);
}

/// Heads `heads.{0..count}`.
pub fn heads<B: Backend>(
    b: &B,
    init: &mut Init,
    count: usize,
    c: usize,
    ks: usize,
    eps: f32,
) -> Result<Vec<DiscHead<B>>> {
    (0..count)
        .map(|i| DiscHead::new(b, init, &format!("heads.{i}"), c, ks, eps))
        .collect()
}
