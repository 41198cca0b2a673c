//! Philox4x32-10 fills, bit-identical to `rae_core::rng` (see its module documentation for
//! the mapping from `(seed, stream, position)` to values).
//!
//! WGSL has no 64-bit integers, so the 64-bit block counter is carried as two u32 words
//! and the 32×32→64 multiply is assembled from 16-bit halves. `ln` and `sin`/`cos` follow
//! `rae_core::rng::ln_f32` and `sincos_2pi_bits` operation by operation, with the same f32
//! constants; only `+ − × ÷ sqrt` and bit manipulation are used, so a device whose
//! division and square root are correctly rounded and that does not contract `a·b + c`
//! into a fused multiply-add reproduces the CPU bit for bit (lavapipe does; so does CUDA
//! with NVRTC's default IEEE division and square root, provided no `--fmad` contraction
//! changes a product-sum).
//!
//! One unit computes one Philox block (four positions) and writes the positions of that
//! block that fall inside the fill. (A fill whose positions run past 2⁶⁴ would wrap on the
//! CPU and not here; stream positions never get there.)

use cubecl::prelude::*;
use rae_core::rng::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};
use rae_core::{PhiloxKey, Result};

use crate::device::{CubeBackend, CubeStorage};
use crate::launch::{grid_1d, kernel_args, sarr, u32_arg, Variant, CUBE_1D};

const LN_C9: f32 = 2.0 / 9.0;
const LN_C7: f32 = 2.0 / 7.0;
const LN_C5: f32 = 2.0 / 5.0;
const LN_C3: f32 = 2.0 / 3.0;
const SIN_C9: f32 = 1.0 / 362_880.0;
const SIN_C7: f32 = 1.0 / 5040.0;
const SIN_C5: f32 = 1.0 / 120.0;
const SIN_C3: f32 = 1.0 / 6.0;
const COS_C10: f32 = -1.0 / 3_628_800.0;
const COS_C8: f32 = 1.0 / 40_320.0;
const COS_C6: f32 = 1.0 / 720.0;
const COS_C4: f32 = 1.0 / 24.0;
const INV_2_22: f32 = 1.0 / 4_194_304.0;
const INV_2_24: f32 = 1.0 / 16_777_216.0;

/// High word of the 64-bit product `a·b`, from 16-bit halves (no u64 needed).
#[cube]
fn mul_hi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffff;
    let a1 = a >> 16;
    let b0 = b & 0xffff;
    let b1 = b >> 16;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
}

/// `(2·(x >> 9) + 1)·2⁻²⁴`, exact in f32.
#[cube]
fn uniform_bits(x: u32) -> f32 {
    f32::cast_from((x >> 9) * 2 + 1) * f32::new(INV_2_24)
}

/// `rae_core::rng::ln_f32`, operation by operation.
#[cube]
fn ln_f32(u: f32) -> f32 {
    let bits = u32::reinterpret(u);
    let mut e = i32::cast_from((bits >> 23) & 0xff) - 127;
    let mut m = f32::reinterpret((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > f32::new(core::f32::consts::SQRT_2) {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = f32::new(LN_C9);
    let p = p * s2 + f32::new(LN_C7);
    let p = p * s2 + f32::new(LN_C5);
    let p = p * s2 + f32::new(LN_C3);
    let p = p * s2 + 2.0;
    f32::cast_from(e) * f32::new(core::f32::consts::LN_2) + p * s
}

/// `r·cos θ` (lane `2l`) and `r·sin θ` (lane `2l + 1`) of one Box–Muller pair, following
/// `rae_core::rng::normal_from_block` and `sincos_2pi_bits`.
#[cube]
fn box_muller(xa: u32, xb: u32, odd_lane: bool) -> f32 {
    let r = f32::sqrt(-2.0 * ln_f32(uniform_bits(xa)));
    let odd = (xb >> 9) * 2 + 1;
    let quadrant = odd >> 22;
    let mut num = odd & 0x003f_ffff;
    let reflect = num > 0x0020_0000;
    if reflect {
        num = 0x0040_0000 - num;
    }
    let phi = f32::cast_from(num) * f32::new(INV_2_22) * f32::new(core::f32::consts::FRAC_PI_2);
    let p2 = phi * phi;
    let s = f32::new(SIN_C9);
    let s = s * p2 - f32::new(SIN_C7);
    let s = s * p2 + f32::new(SIN_C5);
    let s = s * p2 - f32::new(SIN_C3);
    let s = s * p2 + 1.0;
    let sin_phi = s * phi;
    let c = f32::new(COS_C10);
    let c = c * p2 + f32::new(COS_C8);
    let c = c * p2 - f32::new(COS_C6);
    let c = c * p2 + f32::new(COS_C4);
    let c = c * p2 - 0.5;
    let cos_phi = c * p2 + 1.0;
    let mut sin_psi = sin_phi;
    let mut cos_psi = cos_phi;
    if reflect {
        sin_psi = cos_phi;
        cos_psi = sin_phi;
    }
    let mut sn = sin_psi;
    let mut cs = cos_psi;
    if quadrant == 1 {
        sn = cos_psi;
        cs = -sin_psi;
    } else if quadrant == 2 {
        sn = -sin_psi;
        cs = -cos_psi;
    } else if quadrant == 3 {
        sn = -cos_psi;
        cs = sin_psi;
    }
    let mut v = r * cs;
    if odd_lane {
        v = r * sn;
    }
    v
}

/// Fills `out` (`n` values) from the blocks `block .. block + blocks` (the 64-bit block as
/// `(lo, hi)` words), skipping the first `skip` positions of the first block.
#[cube(launch_unchecked)]
fn philox_fill_kernel(
    out: &mut Array<f32>,
    block_lo: u32,
    block_hi: u32,
    key_lo: u32,
    key_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    skip: u32,
    n: u32,
    blocks: u32,
    #[comptime] normal: bool,
) {
    let j = ABSOLUTE_POS;
    if j < blocks as usize {
        let ju = j as u32;
        // Block counter = first block + j, with the carry into the high word.
        let lo = block_lo + ju;
        let mut hi = block_hi;
        if lo < block_lo {
            hi += 1;
        }
        let mut c0 = lo;
        let mut c1 = hi;
        let mut c2 = stream_lo;
        let mut c3 = stream_hi;
        let mut k0 = key_lo;
        let mut k1 = key_hi;
        #[unroll]
        for round in 0..10u32 {
            if round > 0 {
                k0 += PHILOX_W0;
                k1 += PHILOX_W1;
            }
            let hi0 = mul_hi(PHILOX_M0, c0);
            let lo0 = PHILOX_M0 * c0;
            let hi1 = mul_hi(PHILOX_M1, c2);
            let lo1 = PHILOX_M1 * c2;
            let n0 = hi1 ^ c1 ^ k0;
            let n2 = hi0 ^ c3 ^ k1;
            c0 = n0;
            c1 = lo1;
            c2 = n2;
            c3 = lo0;
        }
        // Position of lane l in the fill: 4·j + l − skip.
        let base = ju * 4;
        #[unroll]
        for l in 0..4u32 {
            let q = base + l;
            if q >= skip && q - skip < n {
                let mut x = c0;
                if l == 1 {
                    x = c1;
                } else if l == 2 {
                    x = c2;
                } else if l == 3 {
                    x = c3;
                }
                let mut v = uniform_bits(x);
                if normal {
                    if l < 2 {
                        v = box_muller(c0, c1, l == 1);
                    } else {
                        v = box_muller(c2, c3, l == 3);
                    }
                }
                out[(q - skip) as usize] = v;
            }
        }
    }
}

kernel_args! {
    philox_fill_args: philox_fill_kernel {
        out: output f32,
        block_lo: scalar u32,
        block_hi: scalar u32,
        key_lo: scalar u32,
        key_hi: scalar u32,
        stream_lo: scalar u32,
        stream_hi: scalar u32,
        skip: scalar u32,
        n: scalar u32,
        blocks: scalar u32;
        normal: bool,
    }
}

/// `n` uniforms (or normals) at positions `offset ..` of `key`.
pub(crate) fn fill<R: Runtime>(
    be: &CubeBackend<R>,
    n: usize,
    key: PhiloxKey,
    offset: u64,
    normal: bool,
) -> Result<CubeStorage> {
    let out = be.alloc(n)?;
    if n > 0 {
        let first_block = offset / 4;
        let skip = (offset % 4) as usize;
        let blocks = (skip + n).div_ceil(4);
        let (count, dim) = grid_1d(blocks);
        // SAFETY: unit j writes position 4j + l − skip only when it lies in [0, n).
        unsafe {
            philox_fill_args::Args {
                out: sarr(&out),
                block_lo: first_block as u32,
                block_hi: (first_block >> 32) as u32,
                key_lo: key.seed as u32,
                key_hi: (key.seed >> 32) as u32,
                stream_lo: key.stream as u32,
                stream_hi: (key.stream >> 32) as u32,
                skip: skip as u32,
                n: u32_arg("philox fill length", n)?,
                blocks: u32_arg("philox fill blocks", blocks)?,
                normal,
            }
            .launch(be, count, dim)
        }
    }
    Ok(out)
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for normal in [false, true] {
        v.push(philox_fill_args::variant(
            &format!("normal={normal}"),
            CubeDim::new_1d(CUBE_1D),
            normal,
        ));
    }
}
