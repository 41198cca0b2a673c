//! Batched matrix products `op(a)·op(b)` with a shared-memory tiled kernel.
//!
//! A cube of 16 × 16 units computes a 64 × 64 tile of the result, each unit a strided
//! 4 × 4 block (rows `ty + 16·i`, columns `tx + 16·j`). The K axis advances in steps of 16:
//! the units copy a 64 × 16 slice of `op(a)` and a 16 × 64 slice of `op(b)` into shared
//! memory (zero outside the matrix, so every shape works; the copy walks the operand's
//! contiguous axis, so transposed operands load coalesced too), synchronise, and
//! accumulate. Transposes and the batch broadcast of `b` are strides, never copies.
//!
//! [`MatmulKernel::Cubek`] (the default) first asks cubek 0.2's unit-tiled f32 matmul
//! (`Strategy::SimpleUnit`, plain f32 multiply-adds) and falls back to the tiled kernel
//! when cubek declines the problem; [`MatmulKernel::CubekCmma`] tries cubek's tensor-core
//! kernel first, which may compute in reduced precision (tf32), so it is opt-in. Under
//! `--precision tf32|bf16` (§7.5) the tensor-core kernel is the first choice.

use cubecl::prelude::*;
use rae_core::check::MatmulDims;
use rae_core::{Backend, Precision, Result, Tensor};

use cubek::matmul::definition::MatmulElems;
use cubek::matmul::launch::{launch_ref, Strategy};
use cubek::std::InputBinding;

use crate::device::{CubeBackend, CubeStorage, MatmulKernel};
use crate::kernels::round;
use crate::launch::{kernel_args, sarr, tarr, u32_arg, Variant};

const TILE_M: usize = 64;
const TILE_N: usize = 64;
const TILE_K: usize = 16;
/// Largest batch per launch (the z axis of the grid).
const MAX_BATCH: usize = 65_535;

#[cube(launch_unchecked)]
fn matmul_tiled_kernel(
    a: &Array<f32>,
    b: &Array<f32>,
    out: &mut Array<f32>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_rs: u32,
    b_cs: u32,
    b_bs: u32,
    batch_off: u32,
    #[comptime] a_m_contig: bool,
    #[comptime] b_k_contig: bool,
) {
    let mut a_s = SharedMemory::<f32>::new(TILE_K * TILE_M);
    let mut b_s = SharedMemory::<f32>::new(TILE_K * TILE_N);
    let mut acc = Array::<f32>::new(16usize);
    let mut a_reg = Array::<f32>::new(4usize);
    let mut b_reg = Array::<f32>::new(4usize);
    #[unroll]
    for i in 0..16usize {
        acc[i] = f32::new(0.0);
    }
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let t = UNIT_POS as usize;
    let m = m as usize;
    let n = n as usize;
    let k = k as usize;
    let m0 = CUBE_POS_Y as usize * TILE_M;
    let n0 = CUBE_POS_X as usize * TILE_N;
    let bi = CUBE_POS_Z as usize + batch_off as usize;
    let a_base = bi * a_bs as usize;
    let b_base = bi * b_bs as usize;
    let a_rs = a_rs as usize;
    let a_cs = a_cs as usize;
    let b_rs = b_rs as usize;
    let b_cs = b_cs as usize;

    let mut k0 = 0usize.runtime();
    while k0 < k {
        #[unroll]
        for l in 0..4usize {
            // 1024 values of op(a)[m0.., k0..] per step, four per unit.
            let e = t + l * 256usize;
            let mut mm = e / TILE_K;
            let mut kk = e % TILE_K;
            if a_m_contig {
                mm = e % TILE_M;
                kk = e / TILE_M;
            }
            let gm = m0 + mm;
            let gk = k0 + kk;
            let mut v = f32::new(0.0);
            if gm < m && gk < k {
                v = a[a_base + gm * a_rs + gk * a_cs];
            }
            a_s[kk * TILE_M + mm] = v;
        }
        #[unroll]
        for l in 0..4usize {
            let e = t + l * 256usize;
            let mut kk = e / TILE_N;
            let mut nn = e % TILE_N;
            if b_k_contig {
                kk = e % TILE_K;
                nn = e / TILE_K;
            }
            let gk = k0 + kk;
            let gn = n0 + nn;
            let mut v = f32::new(0.0);
            if gk < k && gn < n {
                v = b[b_base + gk * b_rs + gn * b_cs];
            }
            b_s[kk * TILE_N + nn] = v;
        }
        sync_cube();
        #[unroll]
        for kk in 0..TILE_K {
            #[unroll]
            for i in 0..4usize {
                a_reg[i] = a_s[kk * TILE_M + ty + 16usize * i];
                b_reg[i] = b_s[kk * TILE_N + tx + 16usize * i];
            }
            #[unroll]
            for i in 0..4usize {
                #[unroll]
                for j in 0..4usize {
                    acc[i * 4 + j] += a_reg[i] * b_reg[j];
                }
            }
        }
        sync_cube();
        k0 += TILE_K;
    }
    #[unroll]
    for i in 0..4usize {
        #[unroll]
        for j in 0..4usize {
            let gm = m0 + ty + 16usize * i;
            let gn = n0 + tx + 16usize * j;
            if gm < m && gn < n {
                out[(bi * m + gm) * n + gn] = acc[i * 4 + j];
            }
        }
    }
}

kernel_args! {
    matmul_tiled_args: matmul_tiled_kernel {
        a: input f32,
        b: input f32,
        out: output f32,
        m: scalar u32,
        n: scalar u32,
        k: scalar u32,
        a_rs: scalar u32,
        a_cs: scalar u32,
        a_bs: scalar u32,
        b_rs: scalar u32,
        b_cs: scalar u32,
        b_bs: scalar u32,
        batch_off: scalar u32;
        a_m_contig: bool,
        b_k_contig: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// `op(a)·op(b)` with the sizes `d` from `rae_core::check::matmul`.
pub(crate) fn matmul<R: Runtime>(
    be: &CubeBackend<R>,
    a: &T<R>,
    b: &T<R>,
    ta: bool,
    tb: bool,
    d: MatmulDims,
) -> Result<T<R>> {
    let (m, n, k) = (d.m, d.n, d.k);
    let total = d.batch * m * n;
    if total == 0 || k == 0 {
        let z = crate::kernels::elementwise::fill(be, total, 0.0)?;
        return be.tensor(z, d.out);
    }
    // Operand rounding (§7.5): tensor cores round tf32 themselves; bf16, and any precision
    // emulated without tensor cores, is rounded here (f32 values, so the products below
    // are unchanged code).
    let p = be.precision();
    let (a, b) = if p == Precision::Fp32 || (p == Precision::Tf32 && be.tensor_core_matmul()) {
        (a.clone(), b.clone())
    } else {
        (round::round(be, a, p)?, round::round(be, b, p)?)
    };
    let (a, b) = (&a, &b);
    let out = be.alloc(total)?;
    if be.matmul_kernel() != MatmulKernel::Tiled && cubek(be, a, b, ta, tb, &d, &out) {
        return be.tensor(out, d.out);
    }
    // Logical strides of op(a) [m, k] and op(b) [k, n] inside one batch entry.
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    let b_bs = if d.b_batched { k * n } else { 0 };
    let grid_x = u32_arg("matmul columns", n.div_ceil(TILE_N))?;
    let grid_y = u32_arg("matmul rows", m.div_ceil(TILE_M))?;
    if grid_x > 65_535 || grid_y > 65_535 {
        return Err(be.err(format!(
            "matmul of {m}×{k} by {k}×{n} exceeds the grid limit of 65535 tiles per axis"
        )));
    }
    let mut first = 0;
    while first < d.batch {
        let count = (d.batch - first).min(MAX_BATCH);
        // SAFETY: reads stay inside batch entry bi < batch of a (m·k floats each) and of b
        // (k·n floats, or one shared matrix when b_bs = 0); writes stay below batch·m·n.
        unsafe {
            matmul_tiled_args::Args {
                a: tarr(a),
                b: tarr(b),
                out: sarr(&out),
                m: u32_arg("matmul m", m)?,
                n: u32_arg("matmul n", n)?,
                k: u32_arg("matmul k", k)?,
                a_rs: u32_arg("matmul stride", a_rs)?,
                a_cs: u32_arg("matmul stride", a_cs)?,
                a_bs: u32_arg("matmul stride", m * k)?,
                b_rs: u32_arg("matmul stride", b_rs)?,
                b_cs: u32_arg("matmul stride", b_cs)?,
                b_bs: u32_arg("matmul stride", b_bs)?,
                batch_off: u32_arg("matmul batch", first)?,
                a_m_contig: ta,
                b_k_contig: tb,
            }
            .launch(
                be,
                CubeCount::Static(grid_x, grid_y, count as u32),
                CubeDim::new_2d(16, 16),
            )
        }
        first += count;
    }
    be.tensor(out, d.out)
}

/// Runs the product with cubek; `false` when cubek declines it (the output is then
/// untouched and the tiled kernel runs instead).
fn cubek<R: Runtime>(
    be: &CubeBackend<R>,
    a: &T<R>,
    b: &T<R>,
    ta: bool,
    tb: bool,
    d: &MatmulDims,
    out: &CubeStorage,
) -> bool {
    let (m, n, k, batch) = (d.m, d.n, d.k, d.batch);
    // Logical [batch, m, k], [batch?, k, n] and [batch, m, n] views; transposes are strides.
    let a_strides = if ta { [m * k, 1, m] } else { [m * k, k, 1] };
    let b_strides = if tb { [k * n, 1, k] } else { [k * n, n, 1] };
    let b_batch = if d.b_batched { batch } else { 1 };
    let dtype = f32::as_type_native_unchecked();
    let storage = dtype.storage_type();
    // SAFETY: the views address exactly the elements of each buffer (a: batch·m·k,
    // b: b_batch·k·n, out: batch·m·n floats), as `check::matmul` established.
    let (lhs, rhs, dst) = unsafe {
        (
            TensorBinding::<R>::from_raw_parts(
                a.storage().handle().clone(),
                a_strides.into(),
                [batch, m, k].into(),
            ),
            TensorBinding::<R>::from_raw_parts(
                b.storage().handle().clone(),
                b_strides.into(),
                [b_batch, k, n].into(),
            ),
            TensorBinding::<R>::from_raw_parts(
                out.handle().clone(),
                [m * n, n, 1].into(),
                [batch, m, n].into(),
            ),
        )
    };
    // Tensor cores stage f32 operands as tf32, which is exact for operands already rounded
    // to bf16 (a bf16 mantissa is a prefix of a tf32 one).
    let strategies: &[Strategy] =
        if be.matmul_kernel() == MatmulKernel::CubekCmma || be.tensor_core_matmul() {
            &[
                Strategy::SimpleCyclicCmma(Default::default()),
                Strategy::SimpleUnit(Default::default()),
            ]
        } else {
            &[Strategy::SimpleUnit(Default::default())]
        };
    for strategy in strategies {
        let (l, r, o) = (lhs.clone(), rhs.clone(), dst.clone());
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut elems = MatmulElems::from_single_dtype(dtype);
            launch_ref(
                strategy,
                be.client(),
                InputBinding::new(l, storage),
                InputBinding::new(r, storage),
                o,
                &mut elems,
            )
        }));
        match run {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => trace(|| format!("cubek {strategy} declined {m}×{k}×{n}: {e:?}")),
            Err(_) => trace(|| format!("cubek {strategy} panicked on {m}×{k}×{n}")),
        }
    }
    false
}

/// Prints `msg()` to stderr when `RAE_KERNELS_TRACE` is set (why a fallback ran).
fn trace(msg: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RAE_KERNELS_TRACE").is_some()) {
        eprintln!("rae-kernels: {}", msg());
    }
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for ta in [false, true] {
        for tb in [false, true] {
            v.push(matmul_tiled_args::variant(
                &format!("ta={ta} tb={tb}"),
                CubeDim::new_2d(16, 16),
                ta,
                tb,
            ));
        }
    }
}
