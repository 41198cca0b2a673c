//! [`CubeBackend`]: `rae_core::Backend` for any CubeCL runtime. Shapes are validated with
//! `rae_core::check` (the same errors as the CPU backend), then each op launches the
//! kernels of its family in [`crate::kernels`].

use cubecl::prelude::*;
use rae_core::backend::{
    check_attention_lse, AdamWStep, AttentionGrads, AttentionState, Backend, Binary, ModulateGrads,
    NormGrads, NormStats, PatchOrder, Pool2d, Reduce, Unary, Window2d,
};
use rae_core::{check, PhiloxKey, Precision, Result, Shape, Tensor};

use crate::device::{AttentionKernel, CubeBackend, CubeStorage, MIN_FLOATS};
use crate::kernels::{
    cond, elementwise, embed, flash, flash_backward, glu, layout, matmul, norm, optim, philox,
    reduce, rope, softmax, window,
};

impl<R: Runtime> CubeBackend<R> {
    /// Whether [`Backend::attention_fused`] runs the fused kernels for inputs of head dim
    /// `hd` (the setting, the head dim and the device's shared memory).
    pub fn fuses_attention(&self, hd: usize) -> bool {
        self.attention_kernel() == AttentionKernel::Fused && flash::supports(self, hd)
    }
}

type T<R> = Tensor<CubeBackend<R>>;

impl<R: Runtime> Backend for CubeBackend<R> {
    type Storage = CubeStorage;

    fn name(&self) -> String {
        self.name.to_string()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn max_buffer_floats(&self) -> Option<usize> {
        self.max_alloc
            .map(|bytes| usize::try_from(bytes / 4).unwrap_or(usize::MAX))
    }

    fn upload(&self, data: &[f32], dims: &[usize]) -> Result<T<R>> {
        let shape = Shape::new(dims)?;
        check::numel("upload", &shape, data.len())?;
        self.check_alloc(core::mem::size_of_val(data))?;
        let handle = if data.len() < MIN_FLOATS {
            let mut padded = [0.0f32; MIN_FLOATS];
            padded[..data.len()].copy_from_slice(data);
            self.client.create_from_slice(f32::as_bytes(&padded))
        } else {
            self.client.create_from_slice(f32::as_bytes(data))
        };
        self.tensor(
            CubeStorage {
                handle,
                len: data.len(),
            },
            shape,
        )
    }

    fn download(&self, x: &T<R>) -> Result<Vec<f32>> {
        let n = x.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .client
            .read_one(x.storage().handle.clone())
            .map_err(|e| self.err(format!("reading a tensor of shape {}: {e}", x.shape())))?;
        let vals = f32::from_bytes(&bytes);
        if vals.len() < n {
            return Err(self.err(format!(
                "read {} floats for a tensor of shape {}",
                vals.len(),
                x.shape()
            )));
        }
        Ok(vals[..n].to_vec())
    }

    fn full(&self, dims: &[usize], value: f32) -> Result<T<R>> {
        let shape = Shape::new(dims)?;
        let s = elementwise::fill(self, shape.numel(), value)?;
        self.tensor(s, shape)
    }

    fn sync(&self) -> Result<()> {
        cubecl::future::block_on(self.client.sync()).map_err(|e| self.err(format!("sync: {e}")))
    }

    fn unary(&self, op: Unary, x: &T<R>) -> Result<T<R>> {
        elementwise::unary(self, op, x)
    }

    fn unary_backward(&self, op: Unary, x: &T<R>, dy: &T<R>) -> Result<T<R>> {
        check::same_shape("unary_backward", x.shape(), dy.shape())?;
        elementwise::unary_backward(self, op, x, dy)
    }

    fn binary(&self, op: Binary, a: &T<R>, b: &T<R>) -> Result<T<R>> {
        check::same_shape("binary", a.shape(), b.shape())?;
        elementwise::binary(self, op, a, b)
    }

    fn scale(&self, x: &T<R>, alpha: f32) -> Result<T<R>> {
        elementwise::affine(self, x, alpha, 0.0)
    }

    fn axpy(&self, alpha: f32, x: &T<R>, y: &T<R>) -> Result<T<R>> {
        check::same_shape("axpy", y.shape(), x.shape())?;
        elementwise::axpy(self, alpha, x, y)
    }

    fn bcast_affine(
        &self,
        x: &T<R>,
        a: Option<&T<R>>,
        b: Option<&T<R>>,
        dims: [usize; 3],
    ) -> Result<T<R>> {
        check::bcast_affine(x, a, b, dims)?;
        cond::bcast_affine(self, x, a, b, dims)
    }

    fn reduce(&self, op: Reduce, x: &T<R>, dims: [usize; 3]) -> Result<T<R>> {
        check::view3("reduce", x.shape(), dims)?;
        reduce::reduce(self, op, x, dims)
    }

    fn matmul(&self, a: &T<R>, b: &T<R>, ta: bool, tb: bool) -> Result<T<R>> {
        let d = check::matmul(a.shape(), b.shape(), ta, tb)?;
        matmul::matmul(self, a, b, ta, tb, d)
    }

    fn layernorm(
        &self,
        x: &T<R>,
        gamma: Option<&T<R>>,
        beta: Option<&T<R>>,
        eps: f32,
    ) -> Result<(T<R>, NormStats<Self>)> {
        let rc = check::norm("layernorm", x, gamma, beta)?;
        norm::forward(self, x, gamma, beta, eps, true, rc)
    }

    fn layernorm_backward(
        &self,
        x: &T<R>,
        stats: &NormStats<Self>,
        gamma: Option<&T<R>>,
        has_beta: bool,
        dy: &T<R>,
    ) -> Result<NormGrads<Self>> {
        let rc = check::norm_backward(true, x, stats, gamma, dy)?;
        norm::backward(self, x, stats, gamma, has_beta, dy, true, rc)
    }

    fn rmsnorm(
        &self,
        x: &T<R>,
        weight: Option<&T<R>>,
        eps: f32,
    ) -> Result<(T<R>, NormStats<Self>)> {
        let rc = check::norm("rmsnorm", x, weight, None)?;
        norm::forward(self, x, weight, None, eps, false, rc)
    }

    fn rmsnorm_backward(
        &self,
        x: &T<R>,
        stats: &NormStats<Self>,
        weight: Option<&T<R>>,
        dy: &T<R>,
    ) -> Result<NormGrads<Self>> {
        let rc = check::norm_backward(false, x, stats, weight, dy)?;
        norm::backward(self, x, stats, weight, false, dy, false, rc)
    }

    fn softmax(&self, x: &T<R>) -> Result<T<R>> {
        softmax::softmax(self, x, 1.0)
    }

    fn softmax_backward(&self, y: &T<R>, dy: &T<R>) -> Result<T<R>> {
        check::same_shape("softmax_backward", y.shape(), dy.shape())?;
        softmax::softmax_backward(self, y, dy, 1.0)
    }

    /// The scale folded into the softmax kernel (one pass fewer than the default).
    fn softmax_scaled(&self, x: &T<R>, scale: f32) -> Result<T<R>> {
        softmax::softmax(self, x, scale)
    }

    /// The scale folded into the softmax backward kernel.
    fn softmax_scaled_backward(&self, y: &T<R>, dy: &T<R>, scale: f32) -> Result<T<R>> {
        check::same_shape("softmax_backward", y.shape(), dy.shape())?;
        softmax::softmax_backward(self, y, dy, scale)
    }

    /// The fused kernels (keeping only the row log-sum-exp) unless the backend is set to
    /// the composite path or the head dim is not supported.
    fn attention_fused(
        &self,
        q: &T<R>,
        k: &T<R>,
        v: &T<R>,
        scale: f32,
    ) -> Result<(T<R>, AttentionState<Self>)> {
        check::attention(q, k, v)?;
        if q.numel() > 0 && self.fuses_attention(q.shape().last()) {
            let (q, k, v) = self.attention_operands(q, k, v)?;
            let (o, lse) = flash::forward(self, &q, &k, &v, scale)?;
            return Ok((o, AttentionState::Lse(lse)));
        }
        let (o, p) = self.attention(q, k, v, scale)?;
        Ok((o, AttentionState::Probs(p)))
    }

    /// The fused backward, recomputing the probabilities block by block from `lse`.
    fn attention_fused_backward(
        &self,
        q: &T<R>,
        k: &T<R>,
        v: &T<R>,
        o: &T<R>,
        lse: &T<R>,
        dout: &T<R>,
        scale: f32,
    ) -> Result<AttentionGrads<Self>> {
        check_attention_lse(q, k, v, o, lse, dout)?;
        if q.numel() > 0 && flash::supports(self, q.shape().last()) {
            let (q, k, v) = self.attention_operands(q, k, v)?;
            return flash_backward::backward(self, &q, &k, &v, o, lse, dout, scale);
        }
        let (_, p) = self.attention(q, k, v, scale)?;
        self.attention_backward(q, k, v, &p, dout, scale)
    }

    fn rope(&self, x: &T<R>, cos: &T<R>, sin: &T<R>, inverse: bool) -> Result<T<R>> {
        let (_, n, hd) = check::rope(x, cos, sin)?;
        rope::rope(self, x, cos, sin, inverse, n, hd)
    }

    fn swiglu(&self, u: &T<R>) -> Result<T<R>> {
        let (rows, h) = check::swiglu(u.shape())?;
        glu::swiglu(self, u, rows, h)
    }

    fn swiglu_backward(&self, u: &T<R>, dy: &T<R>) -> Result<T<R>> {
        let (rows, h) = check::swiglu(u.shape())?;
        check::same_shape("swiglu_backward", &u.shape().with_last(h), dy.shape())?;
        glu::swiglu_backward(self, u, dy, rows, h)
    }

    fn modulate(&self, x: &T<R>, shift: Option<&T<R>>, scale: Option<&T<R>>) -> Result<T<R>> {
        let d = check::modulate(x, shift, scale)?;
        cond::cond(self, x, shift, scale, &d, false)
    }

    fn modulate_backward(
        &self,
        x: &T<R>,
        shift: Option<&T<R>>,
        scale: Option<&T<R>>,
        dy: &T<R>,
    ) -> Result<ModulateGrads<Self>> {
        let d = check::modulate(x, shift, scale)?;
        check::same_shape("modulate_backward", x.shape(), dy.shape())?;
        let dx = match scale {
            Some(s) => cond::cond(self, dy, None, Some(s), &d, false)?,
            None => dy.clone(),
        };
        let dshift = match shift {
            Some(_) => Some(cond::cond_reduce(self, dy, None, &d)?),
            None => None,
        };
        let dscale = match scale {
            Some(_) => Some(cond::cond_reduce(self, dy, Some(x), &d)?),
            None => None,
        };
        Ok(ModulateGrads { dx, dshift, dscale })
    }

    fn gate(&self, x: &T<R>, g: &T<R>) -> Result<T<R>> {
        let d = check::cond("gate", x.shape(), g.shape())?;
        cond::cond(self, x, None, Some(g), &d, true)
    }

    fn gate_backward(&self, x: &T<R>, g: &T<R>, dy: &T<R>) -> Result<(T<R>, T<R>)> {
        let d = check::cond("gate_backward", x.shape(), g.shape())?;
        check::same_shape("gate_backward", x.shape(), dy.shape())?;
        let dx = cond::cond(self, dy, None, Some(g), &d, true)?;
        let dg = cond::cond_reduce(self, dy, Some(x), &d)?;
        Ok((dx, dg))
    }

    fn gather_rows(&self, table: &T<R>, idx: &[u32]) -> Result<T<R>> {
        let (_, c) = check::gather(table.shape(), idx)?;
        embed::gather_rows(self, table, idx, c)
    }

    fn scatter_add_rows(&self, dy: &T<R>, idx: &[u32], rows: usize) -> Result<T<R>> {
        let c = check::scatter_rows(dy.shape(), idx, rows)?;
        embed::scatter_add_rows(self, dy, idx, rows, c)
    }

    fn fourier_features(&self, t: &T<R>, w: &T<R>) -> Result<T<R>> {
        let (b, f) = check::fourier(t.shape(), w.shape())?;
        embed::fourier_features(self, t, w, b, f)
    }

    fn patchify(&self, x: &T<R>, p: usize, order: PatchOrder) -> Result<T<R>> {
        let (b, c, h, w) = check::patchify(x.shape(), p)?;
        let out = [b, (h / p) * (w / p), p * p * c];
        layout::patch(self, x, (c, h, w), p, order, true, &out)
    }

    fn unpatchify(
        &self,
        x: &T<R>,
        channels: usize,
        grid: (usize, usize),
        p: usize,
        order: PatchOrder,
    ) -> Result<T<R>> {
        let b = check::unpatchify(x.shape(), channels, grid, p)?;
        let (h, w) = (grid.0 * p, grid.1 * p);
        layout::patch(
            self,
            x,
            (channels, h, w),
            p,
            order,
            false,
            &[b, channels, h, w],
        )
    }

    fn permute0213(&self, x: &T<R>) -> Result<T<R>> {
        let d = check::permute0213(x.shape())?;
        layout::permute0213(self, x, d)
    }

    fn slice_mid(&self, x: &T<R>, dims: [usize; 3], start: usize, len: usize) -> Result<T<R>> {
        check::slice_mid(x.shape(), dims, start, len)?;
        layout::slice_mid(self, x, dims, start, len)
    }

    fn concat_mid(&self, xs: &[&T<R>], outer: usize, inner: usize) -> Result<T<R>> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let mids = check::concat_mid(&shapes, outer, inner)?;
        layout::concat_mid(self, xs, &mids, outer, inner)
    }

    fn im2col(&self, x: &T<R>, g: Window2d) -> Result<T<R>> {
        check::window2d("im2col", x.shape(), &g, false)?;
        window::im2col(self, x, g)
    }

    fn col2im(&self, cols: &T<R>, g: Window2d) -> Result<T<R>> {
        check::window2d("col2im", cols.shape(), &g, true)?;
        window::col2im(self, cols, g)
    }

    fn pool2d(&self, x: &T<R>, g: Window2d, kind: Pool2d) -> Result<T<R>> {
        check::pool2d("pool2d", x.shape(), None, &g)?;
        window::pool2d(self, x, g, kind)
    }

    fn pool2d_backward(&self, x: &T<R>, dy: &T<R>, g: Window2d, kind: Pool2d) -> Result<T<R>> {
        check::pool2d("pool2d_backward", x.shape(), Some(dy.shape()), &g)?;
        window::pool2d_backward(self, x, dy, g, kind)
    }

    fn adamw_step(
        &self,
        param: &mut T<R>,
        grad: &T<R>,
        m: &mut T<R>,
        v: &mut T<R>,
        hp: &AdamWStep,
    ) -> Result<()> {
        check::adamw(param, grad, m, v)?;
        optim::adamw(self, param, grad, m, v, hp)
    }

    fn ema_update(&self, ema: &mut T<R>, param: &T<R>, decay: f32) -> Result<()> {
        check::same_shape("ema_update", ema.shape(), param.shape())?;
        optim::ema(self, ema, param, decay)
    }

    fn fill_uniform(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T<R>> {
        let shape = Shape::new(dims)?;
        let s = philox::fill(self, shape.numel(), key, offset, false)?;
        self.tensor(s, shape)
    }

    fn fill_normal(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T<R>> {
        let shape = Shape::new(dims)?;
        let s = philox::fill(self, shape.numel(), key, offset, true)?;
        self.tensor(s, shape)
    }
}
