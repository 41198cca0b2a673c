//! Device memory of one DiT-DH-XL training step (forward in training mode, then the
//! backward into a full set of gradients) at batch 32, with the composite attention
//! (saving the `[B, H, N, N]` probabilities of every layer) and with the fused attention
//! (saving the `[B, H, N]` log-sum-exp), counted without computing anything.
//!
//! [`Meter`] is a backend whose tensors are byte counts: every op allocates its outputs
//! as the Cube backends do (one buffer per result, the composite attention as
//! matmul → scaled softmax → matmul, its backward as five products; the fused one as
//! output + log-sum-exp, its backward as `D`, dq, dk, dv), and a tensor's bytes return
//! when its last handle drops. The peak of live bytes is the lower bound of a device's peak
//! (the memory pool's rounding and matmul workspaces come on top); the optimiser's two
//! moments and the EMA copy (three parameter-sized buffers) are added to the report.
//!
//! Run: `cargo test -p rae-tests --test attention_memory -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rae_core::backend::{
    check_attention_lse, AdamWStep, AttentionGrads, AttentionState, Backend, Binary, ModulateGrads,
    NormGrads, NormStats, PatchOrder, Reduce, Unary,
};
use rae_core::models::{DitConfig, DitDh, Mode};
use rae_core::nn::{Grads, Init, Module};
use rae_core::{check, PhiloxKey, Result, Shape, Tensor};

/// Live and peak bytes of a [`Meter`] backend.
#[derive(Debug, Default)]
struct Counter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// One device buffer: its size, returned to the counter on drop.
#[derive(Debug)]
struct Buffer {
    bytes: usize,
    counter: Arc<Counter>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A backend that only counts bytes (see the module docs). `fused` selects the attention.
#[derive(Debug, Clone)]
struct Meter {
    counter: Arc<Counter>,
    fused: bool,
}

type T = Tensor<Meter>;

impl Meter {
    fn new(fused: bool) -> Self {
        Meter {
            counter: Arc::default(),
            fused,
        }
    }

    fn live(&self) -> usize {
        self.counter.live.load(Ordering::Relaxed)
    }

    fn peak(&self) -> usize {
        self.counter.peak.load(Ordering::Relaxed)
    }

    fn reset_peak(&self) {
        self.counter.peak.store(self.live(), Ordering::Relaxed);
    }

    fn alloc(&self, shape: Shape) -> Result<T> {
        let bytes = 4 * shape.numel();
        let live = self.counter.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.counter.peak.fetch_max(live, Ordering::Relaxed);
        let buf = Buffer {
            bytes,
            counter: self.counter.clone(),
        };
        Ok(Tensor::from_parts(Arc::new(buf), shape))
    }

    fn alloc_dims(&self, dims: &[usize]) -> Result<T> {
        self.alloc(Shape::new(dims)?)
    }

    fn like(&self, x: &T) -> Result<T> {
        self.alloc(x.shape().clone())
    }

    fn stats(&self, rows: usize) -> Result<NormStats<Self>> {
        Ok(NormStats {
            mean: self.alloc_dims(&[rows])?,
            rstd: self.alloc_dims(&[rows])?,
        })
    }
}

impl Backend for Meter {
    type Storage = Arc<Buffer>;

    fn name(&self) -> String {
        String::from("meter")
    }
    fn upload(&self, data: &[f32], dims: &[usize]) -> Result<T> {
        let s = Shape::new(dims)?;
        check::numel("upload", &s, data.len())?;
        self.alloc(s)
    }
    fn download(&self, x: &T) -> Result<Vec<f32>> {
        Ok(vec![0.0; x.numel()])
    }
    fn full(&self, dims: &[usize], _value: f32) -> Result<T> {
        self.alloc_dims(dims)
    }
    fn unary(&self, _op: Unary, x: &T) -> Result<T> {
        self.like(x)
    }
    fn unary_backward(&self, _op: Unary, x: &T, _dy: &T) -> Result<T> {
        self.like(x)
    }
    fn binary(&self, _op: Binary, a: &T, _b: &T) -> Result<T> {
        self.like(a)
    }
    fn scale(&self, x: &T, _alpha: f32) -> Result<T> {
        self.like(x)
    }
    fn axpy(&self, _alpha: f32, x: &T, _y: &T) -> Result<T> {
        self.like(x)
    }
    fn bcast_affine(&self, x: &T, _a: Option<&T>, _b: Option<&T>, _d: [usize; 3]) -> Result<T> {
        self.like(x)
    }
    fn reduce(&self, _op: Reduce, _x: &T, dims: [usize; 3]) -> Result<T> {
        self.alloc_dims(&[dims[0], dims[2]])
    }
    fn matmul(&self, a: &T, b: &T, ta: bool, tb: bool) -> Result<T> {
        self.alloc(check::matmul(a.shape(), b.shape(), ta, tb)?.out)
    }
    fn layernorm(
        &self,
        x: &T,
        _g: Option<&T>,
        _b: Option<&T>,
        _eps: f32,
    ) -> Result<(T, NormStats<Self>)> {
        Ok((self.like(x)?, self.stats(x.shape().rows())?))
    }
    fn layernorm_backward(
        &self,
        x: &T,
        _s: &NormStats<Self>,
        gamma: Option<&T>,
        has_beta: bool,
        _dy: &T,
    ) -> Result<NormGrads<Self>> {
        let c = x.shape().last();
        Ok(NormGrads {
            dx: self.like(x)?,
            dweight: gamma.map(|_| self.alloc_dims(&[c])).transpose()?,
            dbias: has_beta.then(|| self.alloc_dims(&[c])).transpose()?,
        })
    }
    fn rmsnorm(&self, x: &T, _w: Option<&T>, _eps: f32) -> Result<(T, NormStats<Self>)> {
        Ok((self.like(x)?, self.stats(x.shape().rows())?))
    }
    fn rmsnorm_backward(
        &self,
        x: &T,
        _s: &NormStats<Self>,
        weight: Option<&T>,
        _dy: &T,
    ) -> Result<NormGrads<Self>> {
        let c = x.shape().last();
        Ok(NormGrads {
            dx: self.like(x)?,
            dweight: weight.map(|_| self.alloc_dims(&[c])).transpose()?,
            dbias: None,
        })
    }
    fn softmax(&self, x: &T) -> Result<T> {
        self.like(x)
    }
    fn softmax_backward(&self, y: &T, _dy: &T) -> Result<T> {
        self.like(y)
    }
    // One kernel each on the Cube backends (the scale is folded in).
    fn softmax_scaled(&self, x: &T, _scale: f32) -> Result<T> {
        self.like(x)
    }
    fn softmax_scaled_backward(&self, y: &T, _dy: &T, _scale: f32) -> Result<T> {
        self.like(y)
    }
    fn rope(&self, x: &T, _cos: &T, _sin: &T, _inverse: bool) -> Result<T> {
        self.like(x)
    }
    fn swiglu(&self, u: &T) -> Result<T> {
        let (_, h) = check::swiglu(u.shape())?;
        self.alloc(u.shape().with_last(h))
    }
    fn swiglu_backward(&self, u: &T, _dy: &T) -> Result<T> {
        self.like(u)
    }
    fn modulate(&self, x: &T, _shift: Option<&T>, _scale: Option<&T>) -> Result<T> {
        self.like(x)
    }
    fn modulate_backward(
        &self,
        x: &T,
        shift: Option<&T>,
        scale: Option<&T>,
        _dy: &T,
    ) -> Result<ModulateGrads<Self>> {
        Ok(ModulateGrads {
            dx: self.like(x)?,
            dshift: shift.map(|s| self.like(s)).transpose()?,
            dscale: scale.map(|s| self.like(s)).transpose()?,
        })
    }
    fn gate(&self, x: &T, _g: &T) -> Result<T> {
        self.like(x)
    }
    fn gate_backward(&self, x: &T, g: &T, _dy: &T) -> Result<(T, T)> {
        Ok((self.like(x)?, self.like(g)?))
    }
    fn gather_rows(&self, table: &T, idx: &[u32]) -> Result<T> {
        let (_, c) = check::gather(table.shape(), idx)?;
        self.alloc_dims(&[idx.len(), c])
    }
    fn scatter_add_rows(&self, dy: &T, idx: &[u32], rows: usize) -> Result<T> {
        let c = check::scatter_rows(dy.shape(), idx, rows)?;
        self.alloc_dims(&[rows, c])
    }
    fn fourier_features(&self, t: &T, w: &T) -> Result<T> {
        let (b, f) = check::fourier(t.shape(), w.shape())?;
        self.alloc_dims(&[b, 2 * f])
    }
    fn patchify(&self, x: &T, p: usize, _order: PatchOrder) -> Result<T> {
        let (b, c, h, w) = check::patchify(x.shape(), p)?;
        self.alloc_dims(&[b, (h / p) * (w / p), p * p * c])
    }
    fn unpatchify(
        &self,
        x: &T,
        channels: usize,
        grid: (usize, usize),
        p: usize,
        _order: PatchOrder,
    ) -> Result<T> {
        let b = check::unpatchify(x.shape(), channels, grid, p)?;
        self.alloc_dims(&[b, channels, grid.0 * p, grid.1 * p])
    }
    fn permute0213(&self, x: &T) -> Result<T> {
        let [a, b, c, d] = check::permute0213(x.shape())?;
        self.alloc_dims(&[a, c, b, d])
    }
    fn slice_mid(&self, x: &T, dims: [usize; 3], start: usize, len: usize) -> Result<T> {
        check::slice_mid(x.shape(), dims, start, len)?;
        self.alloc_dims(&[dims[0], len, dims[2]])
    }
    fn concat_mid(&self, xs: &[&T], outer: usize, inner: usize) -> Result<T> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let mids = check::concat_mid(&shapes, outer, inner)?;
        self.alloc_dims(&[outer, mids.iter().sum(), inner])
    }
    fn adamw_step(
        &self,
        _p: &mut T,
        _g: &T,
        _m: &mut T,
        _v: &mut T,
        _hp: &AdamWStep,
    ) -> Result<()> {
        Ok(())
    }
    fn ema_update(&self, _ema: &mut T, _param: &T, _decay: f32) -> Result<()> {
        Ok(())
    }
    fn fill_uniform(&self, dims: &[usize], _key: PhiloxKey, _offset: u64) -> Result<T> {
        self.alloc_dims(dims)
    }
    fn fill_normal(&self, dims: &[usize], _key: PhiloxKey, _offset: u64) -> Result<T> {
        self.alloc_dims(dims)
    }
    fn attention_fused(
        &self,
        q: &T,
        k: &T,
        v: &T,
        scale: f32,
    ) -> Result<(T, AttentionState<Self>)> {
        if !self.fused {
            let (o, p) = self.attention(q, k, v, scale)?;
            return Ok((o, AttentionState::Probs(p)));
        }
        check::attention(q, k, v)?;
        let d = q.dims();
        Ok((
            self.like(q)?,
            AttentionState::Lse(self.alloc_dims(&d[..d.len() - 1])?),
        ))
    }
    fn attention_fused_backward(
        &self,
        q: &T,
        k: &T,
        v: &T,
        o: &T,
        lse: &T,
        dout: &T,
        _scale: f32,
    ) -> Result<AttentionGrads<Self>> {
        check_attention_lse(q, k, v, o, lse, dout)?;
        let _delta = self.like(lse)?;
        Ok(AttentionGrads {
            dq: self.like(q)?,
            dk: self.like(k)?,
            dv: self.like(v)?,
        })
    }
}

/// Bytes as GiB.
fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `(params, live after the forward, peak of the step)` in bytes for DiT-DH-XL at `batch`.
fn step_bytes(fused: bool, batch: usize) -> (usize, usize, usize) {
    let b = Meter::new(fused);
    let cfg = DitConfig::dh_xl();
    let model = DitDh::new(&b, &mut Init::new(0), cfg.clone()).unwrap();
    let mut params = 0usize;
    model.visit(&mut |p| params += 4 * p.value.numel());
    let g = cfg.input_size;
    let x = b.alloc_dims(&[batch, cfg.in_channels, g, g]).unwrap();
    let t = vec![0.5f32; batch];
    let y = vec![1u32; batch];
    b.reset_peak();
    let (v, saved) = model.forward(&b, &x, &t, &y, Mode::Train).unwrap();
    let after_forward = b.live();
    let dv = b.like(&v).unwrap();
    let mut grads = Grads::new();
    model
        .backward(&b, &saved.unwrap(), &dv, &mut grads)
        .unwrap();
    (params, after_forward, b.peak())
}

#[test]
fn dit_dh_xl_batch_32_training_step_memory() {
    let batch = 32;
    let (params, fwd_c, peak_c) = step_bytes(false, batch);
    let (params_f, fwd_f, peak_f) = step_bytes(true, batch);
    assert_eq!(params, params_f);
    // Adam's two moments and the EMA copy live through the step as well.
    let opt_state = 3 * params;
    let cfg = DitConfig::dh_xl();
    let (n, heads) = (cfg.num_tokens(), cfg.heads_enc);
    assert_eq!(cfg.heads_dec, heads);
    let layers = cfg.depth_enc + cfg.depth_dec;
    let probs = 4 * batch * heads * n * n * layers;
    eprintln!(
        "DiT-DH-XL, batch {batch}, {n} tokens, {layers} attention layers of {heads} heads: \
         {:.0}M parameters ({:.2} GiB; with gradients, AdamW moments and EMA {:.2} GiB)",
        params as f64 / 4e6,
        gib(params),
        gib(5 * params)
    );
    eprintln!(
        "attention probabilities kept by the composite path: {layers} × 4·{batch}·{heads}·{n}² \
         = {:.2} GiB",
        gib(probs)
    );
    for (name, fwd, peak) in [("composite", fwd_c, peak_c), ("fused", fwd_f, peak_f)] {
        eprintln!(
            "MEMORY {name}: live after the forward {:.2} GiB, peak of forward + backward \
             {:.2} GiB, with the optimiser state {:.2} GiB",
            gib(fwd),
            gib(peak),
            gib(peak + opt_state)
        );
    }
    // The fused path keeps the log-sum-exp instead of the probabilities of every layer.
    let saving = probs - 4 * batch * heads * n * layers;
    assert!(fwd_c - fwd_f >= saving, "{fwd_c} - {fwd_f} < {saving}");
    assert!(peak_c - peak_f >= saving, "{peak_c} - {peak_f} < {saving}");
}
