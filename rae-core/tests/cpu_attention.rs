//! The CPU backend's attention, which runs one head at a time with its scores in cache,
//! against the composite it replaces (`q·kᵀ`, scaled softmax, `p·v` as separate ops, and
//! the four products and softmax backward of the default backward): the same bits, forward
//! and backward, with heads split between threads, one head with threaded products, a
//! single token, and rank 3. Its agreement with PyTorch is the models' parity tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::backend::Backend;
use rae_core::CpuBackend;

mod common;
use common::{down, up, Gen, T};

const BE: CpuBackend = CpuBackend::new();

fn composite(q: &T, k: &T, v: &T, dout: &T, scale: f32) -> [Vec<f32>; 5] {
    let s = BE.matmul(q, k, false, true).unwrap();
    let p = BE.softmax_scaled(&s, scale).unwrap();
    let o = BE.matmul(&p, v, false, false).unwrap();
    let dv = BE.matmul(&p, dout, true, false).unwrap();
    let dp = BE.matmul(dout, v, false, true).unwrap();
    let ds = BE.softmax_scaled_backward(&p, &dp, scale).unwrap();
    let dq = BE.matmul(&ds, k, false, false).unwrap();
    let dk = BE.matmul(&ds, q, true, false).unwrap();
    [&o, &p, &dq, &dk, &dv].map(down)
}

#[test]
fn per_head_attention_gives_the_composites_bits() {
    let mut g = Gen::new(7);
    for dims in [
        vec![4, 12, 261, 64], // DINOv2-B at batch 4: heads split between threads
        vec![1, 1, 300, 64],  // one head: each product threaded
        vec![2, 3, 17, 8],    // small: under the threshold for threads
        vec![5, 33, 16],      // rank 3
        vec![2, 2, 1, 4],     // a single token
    ] {
        let n: usize = dims.iter().product();
        let mut t = || up(&g.vec(n, -2.0, 2.0), &dims);
        let (q, k, v, dout) = (t(), t(), t(), t());
        let scale = 1.0 / (dims[dims.len() - 1] as f32).sqrt();
        let want = composite(&q, &k, &v, &dout, scale);
        let (o, p) = BE.attention(&q, &k, &v, scale).unwrap();
        let gr = BE.attention_backward(&q, &k, &v, &p, &dout, scale).unwrap();
        let got = [&o, &p, &gr.dq, &gr.dk, &gr.dv].map(down);
        for (name, (a, b)) in ["o", "p", "dq", "dk", "dv"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert!(a == b, "{dims:?} {name}: differs from the composite");
        }
        let mut pd = dims.clone();
        *pd.last_mut().unwrap() = dims[dims.len() - 2];
        assert_eq!(p.dims(), &pd[..]);
    }
}

#[test]
fn attention_backward_checks_the_probabilities_shape() {
    let q = up(&[0.0; 2 * 3 * 4], &[2, 3, 4]);
    let p = up(&[0.0; 2 * 3 * 4], &[2, 3, 4]);
    let e = BE.attention_backward(&q, &q, &q, &p, &q, 0.5).unwrap_err();
    assert!(e.to_string().contains("attention_backward (p)"), "{e}");
}
