//! Fused ("flash") attention `softmax(q·kᵀ·scale)·v` on `[BH, N, hd]` tensors: the
//! forward never stores the `[N, N]` probabilities, only the output and the row
//! log-sum-exp `lse = m + ln Σ exp(s − m)` of the scaled scores; the backward
//! ([`crate::kernels::flash_backward`]) recomputes the probabilities block by block as
//! `P = exp(s − lse)`.
//!
//! Every kernel works on blocks of [`BLOCK`] × [`BLOCK`] scores with a cube of 16 × 16
//! units, each unit owning a 4 × 4 micro-tile (rows `ty + 16·i`, columns `tx + 16·j`) as
//! in the tiled matmul, and the head-dim columns `d = tx + 16·t` of its four rows of an
//! output accumulator. Two building blocks, written once: [`block_scores`] (a block of
//! `A·Bᵀ` over the head dim, both operands streamed from global memory through shared
//! memory 16 columns at a time) and [`block_pv`] (`acc += P·X` for a block `P` in shared
//! memory and 64 rows of `X` streamed 16 rows at a time).
//!
//! Forward: one cube per (head, block of 64 queries), looping over key blocks: scores,
//! the block's row maxima across the 16 units of a row (shared memory, no plane
//! operations, so lavapipe runs it), the online-softmax rescale `exp(m_old − m_new)` of
//! each unit's partial row sum and accumulator, `P` into shared memory, `acc += P·V`.
//! Tokens past `N` are masked (zero probability), head-dim columns past `hd` are zero in
//! shared memory, so any token count and any head dim up to [`MAX_HEAD_DIM`] work; the
//! kernels are specialised for a few head dims ([`PADDED_DIMS`], comptime `hp`). The
//! largest kernel needs 29 KiB of shared memory (fits the 32 KiB of WebGPU adapters and
//! Metal); a device with less takes the composite path.

use cubecl::prelude::*;
use rae_core::{Result, Shape, Tensor};

use crate::device::CubeBackend;
use crate::launch::{kernel_args, sarr, tarr, u32_arg, Variant};

/// Units per axis of a cube (16 × 16).
pub(crate) const U: usize = 16;
/// Rows (queries or keys) and columns of a score block: four per unit and axis.
pub(crate) const BLOCK: usize = 64;
/// Head-dim columns (scores) or rows (`P·X`) per step through shared memory.
const STEP: usize = 16;
/// Row stride of a block and of a transposed step in shared memory (padded: the units of
/// a row read different banks).
pub(crate) const PS: usize = BLOCK + 1;
/// The head dims the kernels are specialised for (multiples of 16; comptime `hp`): a head
/// dim runs in the first that holds it (72, of DiT-DH-XL and the ViT-XL decoder, in 80).
pub(crate) const PADDED_DIMS: [usize; 5] = [16, 32, 64, 80, 128];
/// The largest head dim the fused kernels take; larger ones use the composite path.
pub(crate) const MAX_HEAD_DIM: usize = PADDED_DIMS[PADDED_DIMS.len() - 1];
/// Largest number of heads per launch (the y axis of the grid).
pub(crate) const MAX_HEADS_PER_LAUNCH: usize = 65_535;

/// Floats of the staging buffer that [`block_scores`] and [`block_pv`] share.
pub(crate) const fn staging_floats(hp: usize) -> usize {
    let scores = 2 * STEP * PS;
    let pv = STEP * hp;
    if scores > pv {
        scores
    } else {
        pv
    }
}

/// `acc[4·i + j] = Σ_{d < hd} A[a0 + ty + 16·i, d] · B[b0 + tx + 16·j, d]` for the `[n, hd]`
/// matrices `A`, `B` at `base` (rows past `n` read as zero). Both are staged through `sm`
/// ([`staging_floats`]) 16 head-dim columns at a time, transposed. Every unit of the cube
/// calls it; it starts writing `sm` at once and ends with a barrier.
#[cube]
pub(crate) fn block_scores(
    a: &Array<f32>,
    b: &Array<f32>,
    sm: &mut SharedMemory<f32>,
    acc: &mut Array<f32>,
    base: usize,
    a0: usize,
    b0: usize,
    n: usize,
    hd: usize,
    #[comptime] hp: usize,
) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let t = UNIT_POS as usize;
    let b_off = comptime!(STEP * PS);
    let mut ra = Array::<f32>::new(4usize);
    let mut rb = Array::<f32>::new(4usize);
    #[unroll]
    for i in 0..16usize {
        acc[i] = f32::new(0.0);
    }
    for step in 0..comptime!(hp / STEP) {
        let d0 = step * STEP;
        // 64 rows × 16 columns of each operand, four values per unit.
        #[unroll]
        for l in 0..4usize {
            let e = t + l * 256usize;
            let row = e / STEP;
            let kk = e % STEP;
            let d = d0 + kk;
            let mut va = f32::new(0.0);
            if a0 + row < n && d < hd {
                va = a[base + (a0 + row) * hd + d];
            }
            sm[kk * PS + row] = va;
            let mut vb = f32::new(0.0);
            if b0 + row < n && d < hd {
                vb = b[base + (b0 + row) * hd + d];
            }
            sm[b_off + kk * PS + row] = vb;
        }
        sync_cube();
        #[unroll]
        for kk in 0..STEP {
            #[unroll]
            for i in 0..4usize {
                ra[i] = sm[kk * PS + ty + U * i];
                rb[i] = sm[b_off + kk * PS + tx + U * i];
            }
            #[unroll]
            for i in 0..4usize {
                #[unroll]
                for j in 0..4usize {
                    acc[i * 4 + j] += ra[i] * rb[j];
                }
            }
        }
        sync_cube();
    }
}

/// `acc[i·hp/16 + t] += Σ_{c < 64} P[ty + 16·i, c] · X[x0 + c, tx + 16·t]` for the block
/// `P` in `ps` (row stride [`PS`]) and the `[n, hd]` matrix `X` at `base` (rows past `n`
/// read as zero), staged through `sm` 16 rows at a time. Every unit of the cube calls it;
/// `P` must be written before (the first barrier here publishes it), and it ends with a
/// barrier.
#[cube]
pub(crate) fn block_pv(
    ps: &SharedMemory<f32>,
    x: &Array<f32>,
    sm: &mut SharedMemory<f32>,
    acc: &mut Array<f32>,
    base: usize,
    x0: usize,
    n: usize,
    hd: usize,
    #[comptime] hp: usize,
) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let nt = comptime!(hp / U);
    let total = comptime!(STEP * hp);
    let mut rp = Array::<f32>::new(4usize);
    for step in 0..comptime!(BLOCK / STEP) {
        let c0 = step * STEP;
        let mut e = UNIT_POS as usize;
        while e < total {
            let c = e / hp;
            let d = e % hp;
            let mut val = f32::new(0.0);
            if x0 + c0 + c < n && d < hd {
                val = x[base + (x0 + c0 + c) * hd + d];
            }
            sm[e] = val;
            e += CUBE_DIM as usize;
        }
        sync_cube();
        #[unroll]
        for c in 0..STEP {
            #[unroll]
            for i in 0..4usize {
                rp[i] = ps[(ty + U * i) * PS + c0 + c];
            }
            #[unroll]
            for tt in 0..nt {
                let xv = sm[c * hp + tx + U * tt];
                #[unroll]
                for i in 0..4usize {
                    acc[i * nt + tt] += rp[i] * xv;
                }
            }
        }
        sync_cube();
    }
}

#[cube(launch_unchecked)]
fn flash_forward_kernel(
    q: &Array<f32>,
    k: &Array<f32>,
    v: &Array<f32>,
    o: &mut Array<f32>,
    lse: &mut Array<f32>,
    n: u32,
    hd: u32,
    scale: f32,
    bh_off: u32,
    #[comptime] hp: usize,
) {
    let nt = comptime!(hp / U);
    let mut sm = SharedMemory::<f32>::new(comptime!(staging_floats(hp)));
    let mut ps = SharedMemory::<f32>::new(comptime!(BLOCK * PS));
    let mut red = SharedMemory::<f32>::new(comptime!(BLOCK * U));
    let mut s = Array::<f32>::new(16usize);
    let mut acc = Array::<f32>::new(comptime!(4 * (hp / U)));
    let mut m = Array::<f32>::new(4usize);
    let mut l = Array::<f32>::new(4usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n = n as usize;
    let hd = hd as usize;
    let bh = CUBE_POS_Y as usize + bh_off as usize;
    let base = bh * n * hd;
    let q0 = CUBE_POS_X as usize * BLOCK;
    #[unroll]
    for i in 0..4usize {
        m[i] = f32::new(f32::MIN);
        l[i] = f32::new(0.0);
    }
    #[unroll]
    for i in 0..comptime!(4 * (hp / U)) {
        acc[i] = f32::new(0.0);
    }
    let blocks = n.div_ceil(BLOCK);
    let mut kb = 0usize.runtime();
    while kb < blocks {
        let c0 = kb * BLOCK;
        block_scores(q, k, &mut sm, &mut s, base, q0, c0, n, hd, hp);
        // Scaled scores; masked columns get the lowest float. Row maxima of this unit.
        #[unroll]
        for i in 0..4usize {
            let mut mx = f32::new(f32::MIN);
            #[unroll]
            for j in 0..4usize {
                let mut sv = s[i * 4 + j] * scale;
                if c0 + tx + U * j >= n {
                    sv = f32::new(f32::MIN);
                }
                s[i * 4 + j] = sv;
                mx = mx.max(sv);
            }
            red[(ty + U * i) * U + tx] = mx;
        }
        sync_cube();
        // The row maxima of the block; rescale this unit's partial sums and accumulator.
        #[unroll]
        for i in 0..4usize {
            let mut mx = m[i];
            #[unroll]
            for g in 0..U {
                mx = mx.max(red[(ty + U * i) * U + g]);
            }
            let alpha = f32::exp(m[i] - mx);
            m[i] = mx;
            let mut sum = l[i] * alpha;
            #[unroll]
            for j in 0..4usize {
                let mut p = f32::exp(s[i * 4 + j] - mx);
                if c0 + tx + U * j >= n {
                    p = f32::new(0.0);
                }
                ps[(ty + U * i) * PS + tx + U * j] = p;
                sum += p;
            }
            l[i] = sum;
            #[unroll]
            for t in 0..nt {
                acc[i * nt + t] *= alpha;
            }
        }
        block_pv(&ps, v, &mut sm, &mut acc, base, c0, n, hd, hp);
        kb += 1;
    }
    // Row sums across the 16 units of a row.
    #[unroll]
    for i in 0..4usize {
        red[(ty + U * i) * U + tx] = l[i];
    }
    sync_cube();
    #[unroll]
    for i in 0..4usize {
        let mut sum = f32::new(0.0);
        #[unroll]
        for g in 0..U {
            sum += red[(ty + U * i) * U + g];
        }
        let row = q0 + ty + U * i;
        if row < n {
            let inv = f32::new(1.0) / sum;
            #[unroll]
            for t in 0..nt {
                let d = tx + U * t;
                if d < hd {
                    o[base + row * hd + d] = acc[i * nt + t] * inv;
                }
            }
            if tx == 0 {
                lse[bh * n + row] = m[i] + f32::ln(sum);
            }
        }
    }
}

kernel_args! {
    flash_forward_args: flash_forward_kernel {
        q: input f32,
        k: input f32,
        v: input f32,
        o: output f32,
        lse: output f32,
        n: scalar u32,
        hd: scalar u32,
        scale: scalar f32,
        bh_off: scalar u32;
        hp: usize,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// The head dim of the kernel variant that runs head dim `hd` (at most [`MAX_HEAD_DIM`]).
pub(crate) fn padded(hd: usize) -> usize {
    PADDED_DIMS
        .into_iter()
        .find(|&p| p >= hd)
        .unwrap_or(MAX_HEAD_DIM)
}

/// Shared memory, in bytes, of the largest of the three kernels for padded head dim `hp`
/// (the forward: staging, `P` and the row reductions; the backward kernels hold less).
pub(crate) fn shared_bytes(hp: usize) -> usize {
    4 * (staging_floats(hp) + BLOCK * PS + BLOCK * U)
}

/// Whether the fused kernels take head dim `hd` on this device (head dim, shared memory
/// and units per cube); otherwise attention takes the composite path.
pub(crate) fn supports<R: Runtime>(be: &CubeBackend<R>, hd: usize) -> bool {
    let hw = &be.client().properties().hardware;
    (1..=MAX_HEAD_DIM).contains(&hd)
        && hw.max_shared_memory_size >= shared_bytes(padded(hd))
        && hw.max_units_per_cube >= (U * U) as u32
}

/// `(heads, n, hd)` of a `[.., N, hd]` tensor with at least one element.
pub(crate) fn dims_of<R: Runtime>(q: &T<R>) -> (usize, usize, usize) {
    let d = q.dims();
    let (n, hd) = (d[d.len() - 2], d[d.len() - 1]);
    (q.numel() / (n * hd), n, hd)
}

/// The `[.., N]` shape of the per-row statistics of `q` `[.., N, hd]`.
pub(crate) fn rows_shape<R: Runtime>(q: &T<R>) -> Result<Shape> {
    let d = q.dims();
    Shape::new(&d[..d.len() - 1])
}

/// Launches `launch(count, dim, heads offset)` over the heads in chunks that fit the grid.
pub(crate) fn per_head_chunk(
    heads: usize,
    tiles: usize,
    mut launch: impl FnMut(CubeCount, u32) -> Result<()>,
) -> Result<()> {
    let tiles = u32_arg("attention token blocks", tiles)?;
    if tiles > 65_535 {
        return Err(rae_core::Error::invalid(
            "attention",
            format!("{tiles} token blocks exceed the grid limit of 65535"),
        ));
    }
    let mut first = 0;
    while first < heads {
        let count = (heads - first).min(MAX_HEADS_PER_LAUNCH);
        launch(
            CubeCount::Static(tiles, count as u32, 1),
            u32_arg("attention heads", first)?,
        )?;
        first += count;
    }
    Ok(())
}

/// Fused forward on `[.., N, hd]` inputs of one shape with at least one element and a
/// supported head dim: the output and the row log-sum-exp `[.., N]`.
pub(crate) fn forward<R: Runtime>(
    be: &CubeBackend<R>,
    q: &T<R>,
    k: &T<R>,
    v: &T<R>,
    scale: f32,
) -> Result<(T<R>, T<R>)> {
    let (heads, n, hd) = dims_of(q);
    let o = be.alloc(q.numel())?;
    let lse = be.alloc(heads * n)?;
    let (n32, hd32) = (u32_arg("attention tokens", n)?, u32_arg("head dim", hd)?);
    let hp = padded(hd);
    per_head_chunk(heads, n.div_ceil(BLOCK), |count, off| {
        // SAFETY: the cube of head bh < heads reads rows < n of its [n, hd] matrices of
        // q, k, v (heads·n·hd floats each) and writes the same rows of o and of lse
        // (heads·n floats); shared-memory indices stay below the sizes declared.
        unsafe {
            flash_forward_args::Args {
                q: tarr(q),
                k: tarr(k),
                v: tarr(v),
                o: sarr(&o),
                lse: sarr(&lse),
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
    Ok((
        be.tensor(o, q.shape().clone())?,
        be.tensor(lse, rows_shape(q)?)?,
    ))
}

/// The padded head dims the kernels are specialised for.
pub(crate) fn padded_dims() -> impl Iterator<Item = usize> {
    PADDED_DIMS.into_iter()
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for hp in padded_dims() {
        v.push(flash_forward_args::variant(
            &format!("hp={hp}"),
            CubeDim::new_2d(U as u32, U as u32),
            hp,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_dims_run_in_the_smallest_variant_that_holds_them() {
        for hd in 1..=MAX_HEAD_DIM {
            let hp = padded(hd);
            assert!(hp >= hd && PADDED_DIMS.contains(&hp), "{hd} → {hp}");
            assert!(
                PADDED_DIMS.iter().all(|&p| p < hd || p >= hp),
                "{hd} → {hp}"
            );
        }
        assert_eq!(padded(72), 80);
        assert!(PADDED_DIMS.iter().all(|&p| p % U == 0));
    }

    #[test]
    fn shared_memory_fits_32_kib() {
        for hp in PADDED_DIMS {
            assert!(
                shared_bytes(hp) <= 32 * 1024,
                "hp {hp}: {}",
                shared_bytes(hp)
            );
            assert!(staging_floats(hp) >= STEP * hp && staging_floats(hp) >= 2 * STEP * PS);
        }
    }
}
