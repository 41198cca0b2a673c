//! Attention one head at a time: each head's `[N, N]` scores are made, normalised and
//! used while they are still in cache, instead of three passes over all heads' scores in
//! memory (product, softmax, product). Every head runs the same products and row kernels
//! as the composite ops, in the same order, so the results are the same bits.

use alloc::vec::Vec;

use super::{data, make_dims, matmul, ops, par, pool, T};
use crate::backend::AttentionGrads;
use crate::error::Result;

/// Products under this many multiply-adds stay one call per head on one thread (the
/// threshold of the batched matmul, so the same kernels run).
const MIN_PARALLEL_PRODUCT: usize = 1 << 12;

/// `(heads, n, hd)` of `[.., N, hd]` (shapes already checked equal).
fn geometry(q: &T) -> (usize, usize, usize) {
    let d = q.dims();
    let (n, hd) = (d[d.len() - 2], d[d.len() - 1]);
    (q.numel() / (n * hd).max(1), n, hd)
}

/// The probabilities' shape `[.., N, N]` for `q` `[.., N, hd]` (rank ≥ 2, checked).
pub(super) fn probs_dims(q: &[usize]) -> Vec<usize> {
    let mut d = q.to_vec();
    let r = d.len();
    d[r - 1] = d[r - 2];
    d
}

/// Whether heads run in parallel (each product on one thread) or one after another (each
/// product threaded), as the batched matmul decides for `[heads, n, n]·[heads, n, hd]`.
fn by_heads(heads: usize, n: usize, hd: usize) -> bool {
    let t = par::threads();
    t > 1 && heads >= t && n * n * hd >= MIN_PARALLEL_PRODUCT
}

/// Runs `f(head, threaded, outputs of that head…, scratch)` over every head: the `outs`
/// slices hold `lens[i]` values per head; heads are split between the threads when
/// [`by_heads`], and each thread's heads share one scratch vector.
fn for_heads<const K: usize>(
    heads: usize,
    parallel: bool,
    outs: [&mut [f32]; K],
    lens: [usize; K],
    f: impl Fn(usize, bool, [&mut [f32]; K], &mut Vec<f32>) + Sync,
) {
    let per = match parallel {
        true => heads.div_ceil(par::threads()).max(1),
        false => heads.max(1),
    };
    let mut parts: Vec<(usize, [&mut [f32]; K])> = Vec::new();
    let mut rest = outs;
    let mut first = 0;
    while first < heads {
        let take = per.min(heads - first);
        let mut part: [&mut [f32]; K] = core::array::from_fn(|_| &mut [][..]);
        for (i, r) in rest.iter_mut().enumerate() {
            let (a, b) = core::mem::take(r).split_at_mut(take * lens[i]);
            part[i] = a;
            *r = b;
        }
        parts.push((first, part));
        first += take;
    }
    par::for_each_part(parts.into_iter(), |(first, mut part)| {
        let mut scratch = Vec::new();
        for h in 0..part[0].len() / lens[0].max(1) {
            let one: [&mut [f32]; K] = core::array::from_fn(|i| {
                let s = core::mem::take(&mut part[i]);
                let (a, b) = s.split_at_mut(lens[i]);
                part[i] = b;
                a
            });
            f(first + h, !parallel, one, &mut scratch);
        }
    });
}

/// Head `h` of `x`, `len` values per head.
fn head(x: &[f32], h: usize, len: usize) -> &[f32] {
    &x[h * len..(h + 1) * len]
}

/// `v` as `len` zeros (the products add into their output on the no-`gemm` path).
fn zeros(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// `softmax(q·kᵀ·scale)·v` on `[.., N, hd]` (`scale > 0`, f32): the output and the
/// probabilities `[.., N, N]`.
pub(super) fn forward(q: &T, k: &T, v: &T, scale: f32) -> Result<(T, T)> {
    let (heads, n, hd) = geometry(q);
    let pdims = probs_dims(q.dims());
    let mut p = pool::scratch(heads * n * n);
    let mut o = matmul::output(heads * n * hd);
    if heads * n * hd > 0 {
        let (qs, ks, vs) = (data(q), data(k), data(v));
        let parallel = by_heads(heads, n, hd);
        for_heads(
            heads,
            parallel,
            [&mut p, &mut o],
            [n * n, n * hd],
            |h, threaded, [ph, oh], s| {
                let at = |x| head(x, h, n * hd);
                zeros(s, n * n);
                matmul::product(at(qs), at(ks), s, n, n, hd, false, true, threaded, false);
                super::simd::wide_loop! {
                    for (srow, prow) in s.chunks(n).zip(ph.chunks_mut(n)) {
                        ops::softmax_row(srow, prow, scale);
                    }
                };
                matmul::product(ph, at(vs), oh, n, hd, n, false, false, threaded, false);
            },
        );
    }
    Ok((make_dims(o, q.dims())?, make_dims(p, &pdims)?))
}

/// The backward of [`forward`] from the probabilities `p` and the output gradient `dout`.
pub(super) fn backward(
    q: &T,
    k: &T,
    v: &T,
    p: &T,
    dout: &T,
    scale: f32,
) -> Result<AttentionGrads<super::CpuBackend>> {
    let (heads, n, hd) = geometry(q);
    let (mut dq, mut dk, mut dv) = (
        matmul::output(q.numel()),
        matmul::output(q.numel()),
        matmul::output(q.numel()),
    );
    if heads * n * hd > 0 {
        let (qs, ks, vs, ps, ds) = (data(q), data(k), data(v), data(p), data(dout));
        let parallel = by_heads(heads, n, hd);
        let len = n * hd;
        for_heads(
            heads,
            parallel,
            [&mut dq, &mut dk, &mut dv],
            [len, len, len],
            |h, threaded, [dqh, dkh, dvh], scratch| {
                let at = |x| head(x, h, len);
                let ph = &ps[h * n * n..(h + 1) * n * n];
                matmul::product(ph, at(ds), dvh, n, hd, n, true, false, threaded, false);
                zeros(scratch, 2 * n * n);
                let (dp, dsc) = scratch.split_at_mut(n * n);
                matmul::product(at(ds), at(vs), dp, n, n, hd, false, true, threaded, false);
                for ((prow, dprow), srow) in ph.chunks(n).zip(dp.chunks(n)).zip(dsc.chunks_mut(n)) {
                    ops::softmax_backward_row(prow, dprow, srow, scale);
                }
                matmul::product(dsc, at(ks), dqh, n, hd, n, false, false, threaded, false);
                matmul::product(dsc, at(qs), dkh, n, hd, n, true, false, threaded, false);
            },
        );
    }
    Ok(AttentionGrads {
        dq: make_dims(dq, q.dims())?,
        dk: make_dims(dk, q.dims())?,
        dv: make_dims(dv, q.dims())?,
    })
}
