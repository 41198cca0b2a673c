//! Operand rounding for reduced-precision products (spec §7.5): every value rounded to a
//! `tf32` or `bf16` mantissa (to nearest, ties to even) and kept as an f32, exactly as
//! [`rae_core::Precision::round`] does on the CPU. Integer arithmetic on the bit pattern,
//! so it runs (and is tested) on every runtime, WebGPU included.

use cubecl::prelude::*;
use rae_core::{Precision, Result, Tensor};

use crate::device::CubeBackend;
use crate::launch::{grid_1d, kernel_args, sarr, tarr, Variant};

/// `y = round(x)` keeping `23 − drop` mantissa bits; NaN and infinities unchanged.
#[cube(launch_unchecked)]
fn round_kernel(x: &Array<f32>, y: &mut Array<f32>, #[comptime] drop: u32) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let bits = u32::reinterpret(x[i]);
        let exp_mask = 0x7f80_0000u32;
        let mut out = bits;
        if (bits & exp_mask) != exp_mask {
            let lsb = (bits >> drop) & 1u32;
            let half = (1u32 << (drop - 1)) - 1u32;
            let keep = !((1u32 << drop) - 1u32);
            out = (bits + half + lsb) & keep;
        }
        y[i] = f32::reinterpret(out);
    }
}

kernel_args! {
    round_args: round_kernel { x: input f32, y: output f32; drop: u32 }
}

type T<R> = Tensor<CubeBackend<R>>;

/// `x` with every value rounded to `p` (a shared clone when `p` is f32).
pub(crate) fn round<R: Runtime>(be: &CubeBackend<R>, x: &T<R>, p: Precision) -> Result<T<R>> {
    let drop = 23 - p.mantissa_bits();
    if drop == 0 || x.numel() == 0 {
        return Ok(x.clone());
    }
    let n = x.numel();
    let out = be.alloc(n)?;
    let (count, dim) = grid_1d(n);
    // SAFETY: input and output hold n floats; units check the output's length (the input
    // argument covers exactly the tensor's n values).
    unsafe {
        round_args::Args {
            x: tarr(x),
            y: sarr(&out),
            drop,
        }
        .launch(be, count, dim)
    }
    be.tensor(out, x.shape().clone())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for p in [Precision::Tf32, Precision::Bf16] {
        let drop = 23 - p.mantissa_bits();
        v.push(round_args::variant(
            &format!("precision={p}"),
            CubeDim::new_1d(crate::launch::CUBE_1D),
            drop,
        ));
    }
}
