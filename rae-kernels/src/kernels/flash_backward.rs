//! Backward of the fused attention ([`crate::kernels::flash`]), FlashAttention-2 style
//! without atomics: from `q`, `k`, `v`, the output `o`, the saved row log-sum-exp and
//! `dout`, three kernels compute
//!
//! 1. `D = rowsum(dout ⊙ o)` (one unit per row);
//! 2. `dk`, `dv`: one cube per (head, block of 64 keys), looping over blocks of 64
//!    queries: `Pᵀ = exp(k·qᵀ·scale − lse)`, `dPᵀ = v·doutᵀ`, `dv += Pᵀ·dout`,
//!    `dSᵀ = Pᵀ ⊙ (dPᵀ − D)`, `dk += dSᵀ·q`;
//! 3. `dq`: one cube per (head, block of 64 queries), looping over blocks of 64 keys: the
//!    same `dS`, `dq += dS·k`.
//!
//! `dq` and `dk` are finally multiplied by the scale (the scores are `q·kᵀ·scale`). The
//! probabilities are recomputed in both loops and never stored beyond one block. Built
//! from the forward's [`block_scores`] and [`block_pv`], with the same layout and masking.

use cubecl::prelude::*;
use rae_core::backend::AttentionGrads;
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::kernels::flash::{
    block_pv, block_scores, dims_of, padded, padded_dims, per_head_chunk, staging_floats, BLOCK,
    PS, U,
};
use crate::launch::{grid_1d, kernel_args, sarr, tarr, u32_arg, Variant};

/// `delta[row] = Σ_d dout[row, d]·o[row, d]` for rows of `hd` values.
#[cube(launch_unchecked)]
fn flash_delta_kernel(o: &Array<f32>, dout: &Array<f32>, delta: &mut Array<f32>, hd: u32) {
    let row = ABSOLUTE_POS;
    if row < delta.len() {
        let hd = hd as usize;
        let base = row * hd;
        let mut acc = f32::new(0.0);
        let mut d = 0usize.runtime();
        while d < hd {
            acc += dout[base + d] * o[base + d];
            d += 1;
        }
        delta[row] = acc;
    }
}

kernel_args! {
    flash_delta_args: flash_delta_kernel {
        o: input f32,
        dout: input f32,
        delta: output f32,
        hd: scalar u32;
    }
}

#[cube(launch_unchecked)]
fn flash_backward_kv_kernel(
    q: &Array<f32>,
    k: &Array<f32>,
    v: &Array<f32>,
    dout: &Array<f32>,
    lse: &Array<f32>,
    delta: &Array<f32>,
    dk: &mut Array<f32>,
    dv: &mut Array<f32>,
    n: u32,
    hd: u32,
    scale: f32,
    bh_off: u32,
    #[comptime] hp: usize,
) {
    let nt = comptime!(hp / U);
    let mut sm = SharedMemory::<f32>::new(comptime!(staging_floats(hp)));
    let mut ps = SharedMemory::<f32>::new(comptime!(BLOCK * PS));
    let mut s = Array::<f32>::new(16usize);
    let mut dp = Array::<f32>::new(16usize);
    let mut dk_acc = Array::<f32>::new(comptime!(4 * (hp / U)));
    let mut dv_acc = Array::<f32>::new(comptime!(4 * (hp / U)));
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n = n as usize;
    let hd = hd as usize;
    let bh = CUBE_POS_Y as usize + bh_off as usize;
    let base = bh * n * hd;
    let k0 = CUBE_POS_X as usize * BLOCK;
    #[unroll]
    for i in 0..comptime!(4 * (hp / U)) {
        dk_acc[i] = f32::new(0.0);
        dv_acc[i] = f32::new(0.0);
    }
    let blocks = n.div_ceil(BLOCK);
    let mut qb = 0usize.runtime();
    while qb < blocks {
        let q0 = qb * BLOCK;
        // Rows: this cube's keys; columns: the block's queries.
        block_scores(k, q, &mut sm, &mut s, base, k0, q0, n, hd, hp);
        block_scores(v, dout, &mut sm, &mut dp, base, k0, q0, n, hd, hp);
        #[unroll]
        for j in 0..4usize {
            let col = q0 + tx + U * j;
            let mut l = f32::new(0.0);
            let mut dl = f32::new(0.0);
            if col < n {
                l = lse[bh * n + col];
                dl = delta[bh * n + col];
            }
            #[unroll]
            for i in 0..4usize {
                let mut p = f32::exp(s[i * 4 + j] * scale - l);
                if col >= n {
                    p = f32::new(0.0);
                }
                ps[(ty + U * i) * PS + tx + U * j] = p;
                dp[i * 4 + j] = p * (dp[i * 4 + j] - dl);
            }
        }
        block_pv(&ps, dout, &mut sm, &mut dv_acc, base, q0, n, hd, hp);
        #[unroll]
        for i in 0..4usize {
            #[unroll]
            for j in 0..4usize {
                ps[(ty + U * i) * PS + tx + U * j] = dp[i * 4 + j];
            }
        }
        block_pv(&ps, q, &mut sm, &mut dk_acc, base, q0, n, hd, hp);
        qb += 1;
    }
    #[unroll]
    for i in 0..4usize {
        let key = k0 + ty + U * i;
        if key < n {
            #[unroll]
            for t in 0..nt {
                let d = tx + U * t;
                if d < hd {
                    dk[base + key * hd + d] = dk_acc[i * nt + t] * scale;
                    dv[base + key * hd + d] = dv_acc[i * nt + t];
                }
            }
        }
    }
}

kernel_args! {
    flash_backward_kv_args: flash_backward_kv_kernel {
        q: input f32,
        k: input f32,
        v: input f32,
        dout: input f32,
        lse: input f32,
        delta: input f32,
        dk: output f32,
        dv: output f32,
        n: scalar u32,
        hd: scalar u32,
        scale: scalar f32,
        bh_off: scalar u32;
        hp: usize,
    }
}

#[cube(launch_unchecked)]
fn flash_backward_q_kernel(
    q: &Array<f32>,
    k: &Array<f32>,
    v: &Array<f32>,
    dout: &Array<f32>,
    lse: &Array<f32>,
    delta: &Array<f32>,
    dq: &mut Array<f32>,
    n: u32,
    hd: u32,
    scale: f32,
    bh_off: u32,
    #[comptime] hp: usize,
) {
    let nt = comptime!(hp / U);
    let mut sm = SharedMemory::<f32>::new(comptime!(staging_floats(hp)));
    let mut ps = SharedMemory::<f32>::new(comptime!(BLOCK * PS));
    let mut s = Array::<f32>::new(16usize);
    let mut dp = Array::<f32>::new(16usize);
    let mut dq_acc = Array::<f32>::new(comptime!(4 * (hp / U)));
    let mut l = Array::<f32>::new(4usize);
    let mut dl = Array::<f32>::new(4usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n = n as usize;
    let hd = hd as usize;
    let bh = CUBE_POS_Y as usize + bh_off as usize;
    let base = bh * n * hd;
    let q0 = CUBE_POS_X as usize * BLOCK;
    #[unroll]
    for i in 0..4usize {
        let row = q0 + ty + U * i;
        l[i] = f32::new(0.0);
        dl[i] = f32::new(0.0);
        if row < n {
            l[i] = lse[bh * n + row];
            dl[i] = delta[bh * n + row];
        }
    }
    #[unroll]
    for i in 0..comptime!(4 * (hp / U)) {
        dq_acc[i] = f32::new(0.0);
    }
    let blocks = n.div_ceil(BLOCK);
    let mut kb = 0usize.runtime();
    while kb < blocks {
        let c0 = kb * BLOCK;
        block_scores(q, k, &mut sm, &mut s, base, q0, c0, n, hd, hp);
        block_scores(dout, v, &mut sm, &mut dp, base, q0, c0, n, hd, hp);
        #[unroll]
        for i in 0..4usize {
            #[unroll]
            for j in 0..4usize {
                let mut ds = f32::exp(s[i * 4 + j] * scale - l[i]) * (dp[i * 4 + j] - dl[i]);
                if c0 + tx + U * j >= n {
                    ds = f32::new(0.0);
                }
                ps[(ty + U * i) * PS + tx + U * j] = ds;
            }
        }
        block_pv(&ps, k, &mut sm, &mut dq_acc, base, c0, n, hd, hp);
        kb += 1;
    }
    #[unroll]
    for i in 0..4usize {
        let row = q0 + ty + U * i;
        if row < n {
            #[unroll]
            for t in 0..nt {
                let d = tx + U * t;
                if d < hd {
                    dq[base + row * hd + d] = dq_acc[i * nt + t] * scale;
                }
            }
        }
    }
}

kernel_args! {
    flash_backward_q_args: flash_backward_q_kernel {
        q: input f32,
        k: input f32,
        v: input f32,
        dout: input f32,
        lse: input f32,
        delta: input f32,
        dq: output f32,
        n: scalar u32,
        hd: scalar u32,
        scale: scalar f32,
        bh_off: scalar u32;
        hp: usize,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// The fused backward on shapes validated by the caller (`q`, `k`, `v`, `o`, `dout` of one
/// shape `[.., N, hd]` with at least one element and a supported head dim, `lse` `[.., N]`).
pub(crate) fn backward<R: Runtime>(
    be: &CubeBackend<R>,
    q: &T<R>,
    k: &T<R>,
    v: &T<R>,
    o: &T<R>,
    lse: &T<R>,
    dout: &T<R>,
    scale: f32,
) -> Result<AttentionGrads<CubeBackend<R>>> {
    let (heads, n, hd) = dims_of(q);
    let (n32, hd32) = (u32_arg("attention tokens", n)?, u32_arg("head dim", hd)?);
    let hp = padded(hd);
    let delta = be.alloc(heads * n)?;
    let (count, dim) = grid_1d(heads * n);
    // SAFETY: unit `row < heads·n` (the length of delta) reads row `row` of o and dout,
    // which hold heads·n rows of hd floats.
    unsafe {
        flash_delta_args::Args {
            o: tarr(o),
            dout: tarr(dout),
            delta: sarr(&delta),
            hd: hd32,
        }
        .launch(be, count, dim)
    }
    let (dq, dk, dv) = (
        be.alloc(q.numel())?,
        be.alloc(q.numel())?,
        be.alloc(q.numel())?,
    );
    per_head_chunk(heads, n.div_ceil(BLOCK), |count, off| {
        // SAFETY: the cube of head bh < heads reads rows < n of its [n, hd] matrices and
        // entries < heads·n of lse and delta; it writes rows < n of dk and dv.
        unsafe {
            flash_backward_kv_args::Args {
                q: tarr(q),
                k: tarr(k),
                v: tarr(v),
                dout: tarr(dout),
                lse: tarr(lse),
                delta: sarr(&delta),
                dk: sarr(&dk),
                dv: sarr(&dv),
                n: n32,
                hd: hd32,
                scale,
                bh_off: off,
                hp,
            }
            .launch(be, count, CubeDim::new_2d(U as u32, U as u32))
        }
        Ok(())
    })?;
    per_head_chunk(heads, n.div_ceil(BLOCK), |count, off| {
        // SAFETY: as above, writing rows < n of dq.
        unsafe {
            flash_backward_q_args::Args {
                q: tarr(q),
                k: tarr(k),
                v: tarr(v),
                dout: tarr(dout),
                lse: tarr(lse),
                delta: sarr(&delta),
                dq: sarr(&dq),
                n: n32,
                hd: hd32,
                scale,
                bh_off: off,
                hp,
            }
            .launch(be, count, CubeDim::new_2d(U as u32, U as u32))
        }
        Ok(())
    })?;
    let shape = q.shape().clone();
    Ok(AttentionGrads {
        dq: be.tensor(dq, shape.clone())?,
        dk: be.tensor(dk, shape.clone())?,
        dv: be.tensor(dv, shape)?,
    })
}

/// Every variant of the backward kernels, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    v.push(flash_delta_args::variant(
        "",
        CubeDim::new_1d(crate::launch::CUBE_1D),
    ));
    for hp in padded_dims() {
        v.push(flash_backward_kv_args::variant(
            &format!("hp={hp}"),
            CubeDim::new_2d(U as u32, U as u32),
            hp,
        ));
        v.push(flash_backward_q_args::variant(
            &format!("hp={hp}"),
            CubeDim::new_2d(U as u32, U as u32),
            hp,
        ));
    }
}
