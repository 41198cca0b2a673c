//! Shape validation shared by every backend, so each op reports the same error (naming
//! both shapes) wherever it runs. Each function returns the sizes the kernel needs.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// An error unless `got == expected`.
pub fn same_shape(op: &'static str, expected: &Shape, got: &Shape) -> Result<()> {
    if expected != got {
        return Err(Error::shape(op, expected, got));
    }
    Ok(())
}

/// An error unless `x` has exactly `n` elements.
pub fn numel(op: &'static str, shape: &Shape, n: usize) -> Result<()> {
    if shape.numel() != n {
        return Err(Error::bad_shape(
            op,
            shape,
            format!("expected {n} elements, found {}", shape.numel()),
        ));
    }
    Ok(())
}

/// An `[outer, mid, inner]` view must cover `x` exactly.
pub fn view3(op: &'static str, x: &Shape, dims: [usize; 3]) -> Result<()> {
    let covered = dims[0]
        .checked_mul(dims[1])
        .and_then(|p| p.checked_mul(dims[2]));
    if covered != Some(x.numel()) {
        return Err(Error::bad_shape(
            op,
            x,
            format!(
                "the view [{}, {}, {}] does not cover its {} elements",
                dims[0],
                dims[1],
                dims[2],
                x.numel()
            ),
        ));
    }
    Ok(())
}

/// The sizes of a batched matrix product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of independent products.
    pub batch: usize,
    /// Rows of the result.
    pub m: usize,
    /// Columns of the result.
    pub n: usize,
    /// Contracted size.
    pub k: usize,
    /// Whether `b` has a batch of its own (else it is broadcast).
    pub b_batched: bool,
    /// The result's shape.
    pub out: Shape,
}

/// Validates a matmul (see [`Backend::matmul`]).
pub fn matmul(a: &Shape, b: &Shape, ta: bool, tb: bool) -> Result<MatmulDims> {
    if a.rank() < 2 {
        return Err(Error::bad_shape(
            "matmul",
            a,
            "the left operand needs rank >= 2",
        ));
    }
    if b.rank() < 2 {
        return Err(Error::bad_shape(
            "matmul",
            b,
            "the right operand needs rank >= 2",
        ));
    }
    let ad = a.dims();
    let bd = b.dims();
    let (ar, ac) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let (br, bc) = (bd[bd.len() - 2], bd[bd.len() - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(Error::shape("matmul (contracted sizes differ)", a, b));
    }
    let batch_a = &ad[..ad.len() - 2];
    let batch_b = &bd[..bd.len() - 2];
    let batch: usize = batch_a.iter().product();
    let b_batched = if batch_b.iter().product::<usize>() == 1 && (batch_b.is_empty() || batch != 1)
    {
        false
    } else if batch_b == batch_a {
        true
    } else {
        return Err(Error::shape("matmul (batch dimensions differ)", a, b));
    };
    let mut out: Vec<usize> = batch_a.to_vec();
    out.push(m);
    out.push(n);
    Ok(MatmulDims {
        batch,
        m,
        n,
        k,
        b_batched,
        out: Shape::new(&out)?,
    })
}

/// Validates a linear layer; returns `(rows, in, out)`.
pub fn linear<B: Backend>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    b: Option<&Tensor<B>>,
) -> Result<(usize, usize, usize)> {
    if w.shape().rank() != 2 {
        return Err(Error::bad_shape(
            "linear",
            w.shape(),
            "the weight must be [out, in]",
        ));
    }
    let (out, inp) = (w.dims()[0], w.dims()[1]);
    if x.shape().rank() == 0 || x.shape().last() != inp {
        return Err(Error::shape(
            "linear (input vs weight [out, in])",
            &x.shape().with_last(inp),
            x.shape(),
        ));
    }
    if let Some(b) = b {
        same_shape("linear bias", &Shape::new(&[out])?, b.shape())?;
    }
    Ok((x.shape().rows(), inp, out))
}

/// Validates attention inputs `[.., N, hd]` (q, k, v of one shape).
pub fn attention<B: Backend>(q: &Tensor<B>, k: &Tensor<B>, v: &Tensor<B>) -> Result<()> {
    if q.shape().rank() < 2 {
        return Err(Error::bad_shape(
            "attention",
            q.shape(),
            "q must be [.., N, hd]",
        ));
    }
    same_shape("attention (k vs q)", q.shape(), k.shape())?;
    same_shape("attention (v vs q)", q.shape(), v.shape())?;
    Ok(())
}

/// Validates a normalisation's optional `[C]` parameters; returns `(rows, C)`.
pub fn norm<B: Backend>(
    op: &'static str,
    x: &Tensor<B>,
    gamma: Option<&Tensor<B>>,
    beta: Option<&Tensor<B>>,
) -> Result<(usize, usize)> {
    if x.shape().rank() == 0 {
        return Err(Error::bad_shape(op, x.shape(), "needs at least one axis"));
    }
    let c = x.shape().last();
    let cs = Shape::new(&[c])?;
    if let Some(g) = gamma {
        same_shape(op, &cs, g.shape())?;
    }
    if let Some(b) = beta {
        same_shape(op, &cs, b.shape())?;
    }
    Ok((x.shape().rows(), c))
}

/// Validates a normalisation backward (LayerNorm when `layer`, else RMSNorm): `x`, its
/// parameter, `dy` and the saved statistics (`rstd`, and `mean` for LayerNorm); returns
/// `(rows, C)`.
pub fn norm_backward<B: Backend>(
    layer: bool,
    x: &Tensor<B>,
    stats: &crate::backend::NormStats<B>,
    gamma: Option<&Tensor<B>>,
    dy: &Tensor<B>,
) -> Result<(usize, usize)> {
    let (op, op_stats) = if layer {
        ("layernorm_backward", "layernorm_backward (stats)")
    } else {
        ("rmsnorm_backward", "rmsnorm_backward (stats)")
    };
    let (rows, c) = norm(op, x, gamma, None)?;
    same_shape(op, x.shape(), dy.shape())?;
    numel(op_stats, stats.rstd.shape(), rows)?;
    if layer {
        numel("layernorm_backward (stats mean)", stats.mean.shape(), rows)?;
    }
    Ok((rows, c))
}

/// Validates a per-middle-axis affine map of `x` viewed as `dims`: `a` and `b` hold
/// `dims[1]` values each.
pub fn bcast_affine<B: Backend>(
    x: &Tensor<B>,
    a: Option<&Tensor<B>>,
    b: Option<&Tensor<B>>,
    dims: [usize; 3],
) -> Result<()> {
    view3("bcast_affine", x.shape(), dims)?;
    for t in [a, b].into_iter().flatten() {
        numel("bcast_affine (coefficients)", t.shape(), dims[1])?;
    }
    Ok(())
}

/// Validates an AdamW step: parameter, moments and gradient of one shape.
pub fn adamw<B: Backend>(
    param: &Tensor<B>,
    grad: &Tensor<B>,
    m: &Tensor<B>,
    v: &Tensor<B>,
) -> Result<()> {
    same_shape("adamw_step (param vs grad)", grad.shape(), param.shape())?;
    same_shape("adamw_step (m vs grad)", grad.shape(), m.shape())?;
    same_shape("adamw_step (v vs grad)", grad.shape(), v.shape())
}

/// Validates RoPE; returns `(batch, N, hd)` with `batch` the product of leading axes.
pub fn rope<B: Backend>(
    x: &Tensor<B>,
    cos: &Tensor<B>,
    sin: &Tensor<B>,
) -> Result<(usize, usize, usize)> {
    let d = x.dims();
    if d.len() < 2 || !d[d.len() - 1].is_multiple_of(2) {
        return Err(Error::bad_shape(
            "rope",
            x.shape(),
            "needs [.., N, hd] with hd even",
        ));
    }
    let (n, hd) = (d[d.len() - 2], d[d.len() - 1]);
    let t = Shape::new(&[n, hd])?;
    same_shape("rope (cos table)", &t, cos.shape())?;
    same_shape("rope (sin table)", &t, sin.shape())?;
    Ok((x.numel() / (n * hd).max(1), n, hd))
}

/// Validates SwiGLU input `[.., 2H]`; returns `(rows, H)`.
pub fn swiglu(u: &Shape) -> Result<(usize, usize)> {
    if u.rank() == 0 || !u.last().is_multiple_of(2) {
        return Err(Error::bad_shape("swiglu", u, "the last axis must be even"));
    }
    Ok((u.rows(), u.last() / 2))
}

/// Sizes of a broadcast conditioning op: `x` `[B, N, C]`, condition `[B, Nc, C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CondDims {
    /// Batch.
    pub b: usize,
    /// Tokens of `x`.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Conditioning tokens (`n` is a multiple).
    pub nc: usize,
}

impl CondDims {
    /// How many consecutive tokens share one conditioning token.
    pub fn repeat(&self) -> usize {
        self.n / self.nc
    }
}

/// Validates a conditioning tensor against `x` `[B, N, C]`.
pub fn cond(op: &'static str, x: &Shape, c: &Shape) -> Result<CondDims> {
    let d = x.dims();
    if d.len() != 3 {
        return Err(Error::bad_shape(op, x, "x must be [B, N, C]"));
    }
    let cd = c.dims();
    if cd.len() != 3 || cd[0] != d[0] || cd[2] != d[2] || cd[1] == 0 || !d[1].is_multiple_of(cd[1])
    {
        return Err(Error::shape(op, &Shape::new(&[d[0], 1, d[2]])?, c));
    }
    Ok(CondDims {
        b: d[0],
        n: d[1],
        c: d[2],
        nc: cd[1],
    })
}

/// Validates [`Backend::modulate`] arguments.
pub fn modulate<B: Backend>(
    x: &Tensor<B>,
    shift: Option<&Tensor<B>>,
    scale: Option<&Tensor<B>>,
) -> Result<CondDims> {
    let mut dims: Option<(CondDims, &Shape)> = None;
    for t in [shift, scale].into_iter().flatten() {
        let cdims = cond("modulate", x.shape(), t.shape())?;
        if let Some((prev, prev_shape)) = dims {
            if prev != cdims {
                // Both are valid alone; name the two conditioning shapes that disagree.
                return Err(Error::shape(
                    "modulate (scale vs shift)",
                    prev_shape,
                    t.shape(),
                ));
            }
        }
        dims = Some((cdims, t.shape()));
    }
    match dims {
        Some((d, _)) => Ok(d),
        None => {
            let d = x.dims();
            if d.len() != 3 {
                return Err(Error::bad_shape(
                    "modulate",
                    x.shape(),
                    "x must be [B, N, C]",
                ));
            }
            Ok(CondDims {
                b: d[0],
                n: d[1],
                c: d[2],
                nc: d[1].max(1),
            })
        }
    }
}

/// Validates an embedding lookup; returns `(V, C)`.
pub fn gather(table: &Shape, idx: &[u32]) -> Result<(usize, usize)> {
    if table.rank() != 2 {
        return Err(Error::bad_shape(
            "gather_rows",
            table,
            "the table must be [V, C]",
        ));
    }
    let v = table.dims()[0];
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= v) {
        return Err(Error::invalid(
            "gather_rows",
            format!("index {bad} is outside a table of {v} rows"),
        ));
    }
    Ok((v, table.dims()[1]))
}

/// Validates a scatter-add of `dy` `[n, C]` rows into a `[rows, C]` table; returns `C`.
pub fn scatter_rows(dy: &Shape, idx: &[u32], rows: usize) -> Result<usize> {
    let (_, c) = gather(&Shape::new(&[rows, dy.last()])?, idx)?;
    same_shape("scatter_add_rows", &Shape::new(&[idx.len(), c])?, dy)?;
    Ok(c)
}

/// Validates Fourier features; returns `(B, F)`.
pub fn fourier(t: &Shape, w: &Shape) -> Result<(usize, usize)> {
    if t.rank() != 1 {
        return Err(Error::bad_shape("fourier_features", t, "t must be [B]"));
    }
    if w.rank() != 1 {
        return Err(Error::bad_shape("fourier_features", w, "w must be [F]"));
    }
    Ok((t.dims()[0], w.dims()[0]))
}

/// Validates patchify; returns `(B, C, H, W)`.
pub fn patchify(x: &Shape, p: usize) -> Result<(usize, usize, usize, usize)> {
    let d = x.dims();
    if d.len() != 4 || p == 0 || !d[2].is_multiple_of(p) || !d[3].is_multiple_of(p) {
        return Err(Error::bad_shape(
            "patchify",
            x,
            format!("needs [B, C, H, W] with H and W multiples of the patch size {p}"),
        ));
    }
    Ok((d[0], d[1], d[2], d[3]))
}

/// Validates unpatchify; returns `B`.
pub fn unpatchify(x: &Shape, channels: usize, grid: (usize, usize), p: usize) -> Result<usize> {
    let d = x.dims();
    let (Some(want_n), Some(want_c)) = (
        grid.0.checked_mul(grid.1),
        p.checked_mul(p).and_then(|pp| pp.checked_mul(channels)),
    ) else {
        return Err(Error::invalid(
            "unpatchify",
            format!(
                "a {}x{} grid of {p}x{p} patches of {channels} channels overflows",
                grid.0, grid.1
            ),
        ));
    };
    if d.len() != 3 || d[1] != want_n || d[2] != want_c {
        let b = d.first().copied().unwrap_or(1);
        return Err(Error::shape(
            "unpatchify",
            &Shape::new(&[b, want_n, want_c])?,
            x,
        ));
    }
    Ok(d[0])
}

/// Validates a rank-4 permute; returns the four sizes.
pub fn permute0213(x: &Shape) -> Result<[usize; 4]> {
    let d = x.dims();
    if d.len() != 4 {
        return Err(Error::bad_shape("permute0213", x, "needs rank 4"));
    }
    Ok([d[0], d[1], d[2], d[3]])
}

/// Validates a middle-axis slice.
pub fn slice_mid(x: &Shape, dims: [usize; 3], start: usize, len: usize) -> Result<()> {
    view3("slice_mid", x, dims)?;
    if start.checked_add(len).is_none_or(|end| end > dims[1]) {
        return Err(Error::invalid(
            "slice_mid",
            format!(
                "range {start}..{} is outside an axis of {}",
                start.saturating_add(len),
                dims[1]
            ),
        ));
    }
    Ok(())
}

/// Validates a middle-axis concatenation; returns each input's middle size.
pub fn concat_mid(shapes: &[&Shape], outer: usize, inner: usize) -> Result<Vec<usize>> {
    let per = outer.checked_mul(inner).unwrap_or(0);
    let mut mids = Vec::with_capacity(shapes.len());
    for s in shapes {
        if per == 0 || s.numel() % per != 0 {
            return Err(Error::bad_shape(
                "concat_mid",
                s,
                format!("is not a whole number of [{outer}, _, {inner}] rows"),
            ));
        }
        mids.push(s.numel() / per);
    }
    Ok(mids)
}

/// Validates [`Backend::im2col`] (`x` `[n, c, h, w]`) or, with `cols`,
/// [`Backend::col2im`] (`x` `[n, ho·wo, c·kh·kw]`); returns `(ho, wo)`.
pub fn window2d(
    op: &'static str,
    x: &Shape,
    g: &crate::backend::Window2d,
    cols: bool,
) -> Result<(usize, usize)> {
    g.check()?;
    let want = if cols {
        Shape::new(&g.cols_dims())?
    } else {
        Shape::new(&g.input_dims())?
    };
    same_shape(op, &want, x)?;
    Ok(g.out_hw())
}

/// Validates [`Backend::pool2d`] (`x` `[n, c, h, w]`) and, with `dy`,
/// [`Backend::pool2d_backward`] (`dy` `[n, c, ho, wo]`); returns `(ho, wo)`.
pub fn pool2d(
    op: &'static str,
    x: &Shape,
    dy: Option<&Shape>,
    g: &crate::backend::Window2d,
) -> Result<(usize, usize)> {
    g.check_pool()?;
    same_shape(op, &Shape::new(&g.input_dims())?, x)?;
    if let Some(dy) = dy {
        same_shape(op, &Shape::new(&g.pooled_dims())?, dy)?;
    }
    Ok(g.out_hw())
}
