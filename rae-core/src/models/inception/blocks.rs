//! The layers of the FID Inception: `BasicConv2d` (conv without bias + batch norm, eps
//! 0.001, folded into one conv with bias at load time, then ReLU) and the mixed blocks of
//! pytorch-fid / torch-fidelity (`InceptionA`–`InceptionE`, with the FID patches: average
//! pools that do not count padding, and max pooling in the last block's pool branch).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Pool2d, Unary, Window2d};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, HostTensors, Module, Param};
use crate::tensor::Tensor;

/// Batch-norm epsilon of every `BasicConv2d`.
pub const BN_EPS: f64 = 0.001;

/// One `BasicConv2d` of the checkpoint: its name prefix and geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvDef {
    /// Prefix of `{prefix}.conv.weight` and `{prefix}.bn.*`.
    pub name: String,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel `(kh, kw)`.
    pub k: (usize, usize),
    /// Stride `(sh, sw)`.
    pub s: (usize, usize),
    /// Zero padding `(ph, pw)`.
    pub p: (usize, usize),
}

impl ConvDef {
    fn new(prefix: &str, name: &str, cin: usize, cout: usize, k: (usize, usize)) -> Self {
        ConvDef {
            name: format!("{prefix}{name}"),
            cin,
            cout,
            k,
            s: (1, 1),
            p: (0, 0),
        }
    }

    fn stride(mut self, s: usize) -> Self {
        self.s = (s, s);
        self
    }

    fn pad(mut self, ph: usize, pw: usize) -> Self {
        self.p = (ph, pw);
        self
    }

    /// The checkpoint tensors of this layer, with their shapes.
    pub fn tensors(&self) -> [(String, Vec<usize>); 5] {
        let n = &self.name;
        let c = vec![self.cout];
        [
            (
                format!("{n}.conv.weight"),
                vec![self.cout, self.cin, self.k.0, self.k.1],
            ),
            (format!("{n}.bn.weight"), c.clone()),
            (format!("{n}.bn.bias"), c.clone()),
            (format!("{n}.bn.running_mean"), c.clone()),
            (format!("{n}.bn.running_var"), c),
        ]
    }
}

/// `ReLU(x)`: one [`Unary::Relu`] pass.
pub fn relu<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    b.unary(Unary::Relu, x)
}

/// A `BasicConv2d` with its batch norm folded in: `ReLU(conv(x, W·γ/σ) + β − μ·γ/σ)`,
/// `σ = sqrt(var + 0.001)`.
#[derive(Debug, Clone)]
pub struct ConvBn<B: Backend> {
    /// The folded conv; its parameters are named `{prefix}.conv.weight` / `.conv.bias`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> ConvBn<B> {
    /// Folds the batch norm of `def` from `src` (whose names and shapes were checked).
    pub fn load(b: &B, src: &HostTensors, def: &ConvDef) -> Result<Self> {
        let [w, g, beta, mean, var] = def.tensors().map(|(name, _)| {
            src.get(&name)
                .map(|t| t.data.as_slice())
                .ok_or_else(|| Error::invalid("FID Inception", format!("no tensor {name}")))
        });
        let (w, g, beta, mean, var) = (w?, g?, beta?, mean?, var?);
        let per_out = w.len() / def.cout;
        let mut wf = Vec::with_capacity(w.len());
        let mut bf = Vec::with_capacity(def.cout);
        for o in 0..def.cout {
            let denom = f64::from(var[o]) + BN_EPS;
            if denom.is_nan() || denom <= 0.0 {
                return Err(Error::invalid(
                    format!("FID Inception: tensor {}.bn.running_var", def.name),
                    format!("value {} at {o} leaves no positive variance", var[o]),
                ));
            }
            let inv = f64::from(g[o]) / libm::sqrt(denom);
            wf.extend(
                w[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (f64::from(v) * inv) as f32),
            );
            bf.push((f64::from(beta[o]) - f64::from(mean[o]) * inv) as f32);
        }
        let dims = [def.cout, def.cin, def.k.0, def.k.1];
        Ok(ConvBn {
            conv: Conv2d {
                weight: Param::buffer(format!("{}.conv.weight", def.name), b.upload(&wf, &dims)?),
                bias: Some(Param::buffer(
                    format!("{}.conv.bias", def.name),
                    b.upload(&bf, &[def.cout])?,
                )),
                stride: def.s,
                padding: def.p,
            },
        })
    }

    /// `x` `[n, cin, h, w]` → `[n, cout, ho, wo]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        relu(b, &self.conv.forward(b, x)?)
    }
}

impl<B: Backend> Module<B> for ConvBn<B> {
    crate::module_params!(conv);
}

/// `k×k` pooling with stride `s` and padding `p` of `x` `[n, c, h, w]`.
pub fn pool<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    k: usize,
    s: usize,
    p: usize,
    kind: Pool2d,
) -> Result<Tensor<B>> {
    let d = x.dims();
    if d.len() != 4 {
        return Err(Error::bad_shape(
            "Inception pool",
            x.shape(),
            "expected [n, c, h, w]",
        ));
    }
    let g = Window2d {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
        kh: k,
        kw: k,
        sh: s,
        sw: s,
        ph: p,
        pw: p,
    };
    b.pool2d(x, g, kind)
}

/// The FID blocks' 3×3 stride-1 average pool that divides by the in-bounds count.
fn avg3<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    pool(b, x, 3, 1, 1, Pool2d::Avg { count_pad: false })
}

/// Concatenates `[n, c_i, h, w]` tensors along the channels.
pub fn cat<B: Backend>(b: &B, xs: &[&Tensor<B>]) -> Result<Tensor<B>> {
    let d = xs[0].dims().to_vec();
    let c: usize = xs.iter().map(|x| x.dims()[1]).sum();
    b.concat_mid(xs, d[0], d[2] * d[3])?
        .reshape(&[d[0], c, d[2], d[3]])
}

/// Which mixed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `InceptionA` (35×35) with `pool` channels in its pool branch.
    A {
        /// Pool-branch width.
        pool: usize,
    },
    /// `InceptionB` (35 → 17 reduction).
    B,
    /// `InceptionC` (17×17) with `c7` channels inside its 7×7 branches.
    C {
        /// 7×7 branch width.
        c7: usize,
    },
    /// `InceptionD` (17 → 8 reduction).
    D,
    /// `InceptionE` (8×8): average pool branch (`E_1`) or, in the last block, max (`E_2`).
    E {
        /// Max pooling in the pool branch (the FID patch of `Mixed_7c`).
        max_pool: bool,
    },
}

/// The `BasicConv2d` layers of a mixed block named `prefix` on `cin` channels, in the order
/// [`Mixed::forward`] takes them, and its output width.
pub fn mixed_defs(prefix: &str, kind: Kind, cin: usize) -> (Vec<ConvDef>, usize) {
    let p = &format!("{prefix}.");
    let d = |n: &str, i, o, k| ConvDef::new(p, n, i, o, k);
    match kind {
        Kind::A { pool } => (
            vec![
                d("branch1x1", cin, 64, (1, 1)),
                d("branch5x5_1", cin, 48, (1, 1)),
                d("branch5x5_2", 48, 64, (5, 5)).pad(2, 2),
                d("branch3x3dbl_1", cin, 64, (1, 1)),
                d("branch3x3dbl_2", 64, 96, (3, 3)).pad(1, 1),
                d("branch3x3dbl_3", 96, 96, (3, 3)).pad(1, 1),
                d("branch_pool", cin, pool, (1, 1)),
            ],
            64 + 64 + 96 + pool,
        ),
        Kind::B => (
            vec![
                d("branch3x3", cin, 384, (3, 3)).stride(2),
                d("branch3x3dbl_1", cin, 64, (1, 1)),
                d("branch3x3dbl_2", 64, 96, (3, 3)).pad(1, 1),
                d("branch3x3dbl_3", 96, 96, (3, 3)).stride(2),
            ],
            384 + 96 + cin,
        ),
        Kind::C { c7 } => (
            vec![
                d("branch1x1", cin, 192, (1, 1)),
                d("branch7x7_1", cin, c7, (1, 1)),
                d("branch7x7_2", c7, c7, (1, 7)).pad(0, 3),
                d("branch7x7_3", c7, 192, (7, 1)).pad(3, 0),
                d("branch7x7dbl_1", cin, c7, (1, 1)),
                d("branch7x7dbl_2", c7, c7, (7, 1)).pad(3, 0),
                d("branch7x7dbl_3", c7, c7, (1, 7)).pad(0, 3),
                d("branch7x7dbl_4", c7, c7, (7, 1)).pad(3, 0),
                d("branch7x7dbl_5", c7, 192, (1, 7)).pad(0, 3),
                d("branch_pool", cin, 192, (1, 1)),
            ],
            768,
        ),
        Kind::D => (
            vec![
                d("branch3x3_1", cin, 192, (1, 1)),
                d("branch3x3_2", 192, 320, (3, 3)).stride(2),
                d("branch7x7x3_1", cin, 192, (1, 1)),
                d("branch7x7x3_2", 192, 192, (1, 7)).pad(0, 3),
                d("branch7x7x3_3", 192, 192, (7, 1)).pad(3, 0),
                d("branch7x7x3_4", 192, 192, (3, 3)).stride(2),
            ],
            320 + 192 + cin,
        ),
        Kind::E { .. } => (
            vec![
                d("branch1x1", cin, 320, (1, 1)),
                d("branch3x3_1", cin, 384, (1, 1)),
                d("branch3x3_2a", 384, 384, (1, 3)).pad(0, 1),
                d("branch3x3_2b", 384, 384, (3, 1)).pad(1, 0),
                d("branch3x3dbl_1", cin, 448, (1, 1)),
                d("branch3x3dbl_2", 448, 384, (3, 3)).pad(1, 1),
                d("branch3x3dbl_3a", 384, 384, (1, 3)).pad(0, 1),
                d("branch3x3dbl_3b", 384, 384, (3, 1)).pad(1, 0),
                d("branch_pool", cin, 192, (1, 1)),
            ],
            320 + 768 + 768 + 192,
        ),
    }
}

/// A mixed block: its kind and its layers in [`mixed_defs`] order.
#[derive(Debug, Clone)]
pub struct Mixed<B: Backend> {
    /// Which block.
    pub kind: Kind,
    /// Its `BasicConv2d` layers.
    pub convs: Vec<ConvBn<B>>,
}

impl<B: Backend> Mixed<B> {
    /// `x` `[n, cin, h, w]` → the concatenated branches.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let f = |c: &ConvBn<B>, x: &Tensor<B>| c.forward(b, x);
        let bad = || {
            Error::invalid(
                "FID Inception",
                format!("a {:?} block with {} layers", self.kind, self.convs.len()),
            )
        };
        match (self.kind, self.convs.as_slice()) {
            (Kind::A { .. }, [b1, b5a, b5b, d1, d2, d3, bp]) => {
                let y1 = f(b1, x)?;
                let y5 = f(b5b, &f(b5a, x)?)?;
                let yd = f(d3, &f(d2, &f(d1, x)?)?)?;
                let yp = f(bp, &avg3(b, x)?)?;
                cat(b, &[&y1, &y5, &yd, &yp])
            }
            (Kind::B, [b3, d1, d2, d3]) => {
                let y3 = f(b3, x)?;
                let yd = f(d3, &f(d2, &f(d1, x)?)?)?;
                let yp = pool(b, x, 3, 2, 0, Pool2d::Max)?;
                cat(b, &[&y3, &yd, &yp])
            }
            (Kind::C { .. }, [b1, s1, s2, s3, d1, d2, d3, d4, d5, bp]) => {
                let y1 = f(b1, x)?;
                let y7 = f(s3, &f(s2, &f(s1, x)?)?)?;
                let yd = f(d5, &f(d4, &f(d3, &f(d2, &f(d1, x)?)?)?)?)?;
                let yp = f(bp, &avg3(b, x)?)?;
                cat(b, &[&y1, &y7, &yd, &yp])
            }
            (Kind::D, [t1, t2, s1, s2, s3, s4]) => {
                let y3 = f(t2, &f(t1, x)?)?;
                let y7 = f(s4, &f(s3, &f(s2, &f(s1, x)?)?)?)?;
                let yp = pool(b, x, 3, 2, 0, Pool2d::Max)?;
                cat(b, &[&y3, &y7, &yp])
            }
            (Kind::E { max_pool }, [b1, t1, t2a, t2b, d1, d2, d3a, d3b, bp]) => {
                let y1 = f(b1, x)?;
                let t = f(t1, x)?;
                let (ya, yb) = (f(t2a, &t)?, f(t2b, &t)?);
                drop(t);
                let d = f(d2, &f(d1, x)?)?;
                let (da, db) = (f(d3a, &d)?, f(d3b, &d)?);
                drop(d);
                let pooled = if max_pool {
                    pool(b, x, 3, 1, 1, Pool2d::Max)?
                } else {
                    avg3(b, x)?
                };
                let yp = f(bp, &pooled)?;
                cat(b, &[&y1, &ya, &yb, &da, &db, &yp])
            }
            _ => Err(bad()),
        }
    }
}

impl<B: Backend> Module<B> for Mixed<B> {
    crate::module_params!(convs);
}
