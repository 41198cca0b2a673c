//! Rotary position embedding in the adjacent-pair layout of §3.4, and its inverse (the
//! backward). One unit per channel pair `(2p, 2p+1)` of one token of one head.

use cubecl::prelude::*;
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::launch::{grid_1d, kernel_args, sarr, tarr, u32_arg, Variant, CUBE_1D};

#[cube(launch_unchecked)]
fn rope_kernel(
    x: &Array<f32>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    y: &mut Array<f32>,
    pairs: u32,
    n: u32,
    half: u32,
    #[comptime] inverse: bool,
) {
    let q = ABSOLUTE_POS;
    if q < pairs as usize {
        let half = half as usize;
        let row = q / half;
        let p = q % half;
        let t = row % n as usize;
        let i0 = row * 2 * half + 2 * p;
        let c0 = t * 2 * half + 2 * p;
        let a = x[i0];
        let b = x[i0 + 1];
        if inverse {
            y[i0] = a * cos[c0] + b * sin[c0 + 1];
            y[i0 + 1] = b * cos[c0 + 1] - a * sin[c0];
        } else {
            y[i0] = a * cos[c0] - b * sin[c0];
            y[i0 + 1] = b * cos[c0 + 1] + a * sin[c0 + 1];
        }
    }
}

kernel_args! {
    rope_args: rope_kernel {
        x: input f32,
        cos: input f32,
        sin: input f32,
        y: output f32,
        pairs: scalar u32,
        n: scalar u32,
        half: scalar u32;
        inverse: bool,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// RoPE on `x` `[.., N, hd]` with tables `[N, hd]` (checked by the caller).
pub(crate) fn rope<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    cos: &T<R>,
    sin: &T<R>,
    inverse: bool,
    n: usize,
    hd: usize,
) -> Result<T<R>> {
    let out = be.alloc(x.numel())?;
    let pairs = x.numel() / 2;
    if pairs > 0 {
        let (count, dim) = grid_1d(pairs);
        // SAFETY: unit q < pairs touches x/y at row·hd + 2p + {0,1} < numel and the tables
        // at t·hd + 2p + {0,1} < n·hd (t = row mod n).
        unsafe {
            rope_args::Args {
                x: tarr(x),
                cos: tarr(cos),
                sin: tarr(sin),
                y: sarr(&out),
                pairs: u32_arg("rope size", pairs)?,
                n: u32_arg("rope tokens", n)?,
                half: u32_arg("rope head size", hd / 2)?,
                inverse,
            }
            .launch(be, count, dim)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    for inverse in [false, true] {
        v.push(rope_args::variant(
            &format!("inverse={inverse}"),
            CubeDim::new_1d(CUBE_1D),
            inverse,
        ));
    }
}
