//! The generation metrics of §6.1 on feature arrays against torch-fidelity and ADM's
//! evaluator logic: `tests/fixtures/eval_metrics.safetensors`, written by
//! `tools/make_eval_fixtures.py`. Every value agrees to 1e-6 relative (f64).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::metrics::{
    fid_from_features, inception_score, kid, manifold_radii, mmd2_unbiased_poly, precision_recall,
    GaussianStats, KidOptions, NumpyRandomState, ADM_NEIGHBOURS,
};
use rae_core::safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/eval_metrics.safetensors"
);

struct Fix {
    bytes: Vec<u8>,
}

impl Fix {
    fn load() -> Self {
        Fix {
            bytes: std::fs::read(FIXTURE).expect("the eval_metrics fixture"),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::parse(&self.bytes, FIXTURE).unwrap()
    }
    /// An f32 tensor and its `[rows, cols]`.
    fn rows(&self, name: &str) -> (Vec<f32>, usize, usize) {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        (t.to_f32().unwrap(), t.shape[0], t.shape[1])
    }
    fn f64s(&self, name: &str) -> Vec<f64> {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype, Dtype::F64, "{name}");
        t.data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn i64s(&self, name: &str) -> Vec<i64> {
        self.st().read_i64(name).unwrap()
    }
}

fn rel(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs().max(1e-300)
    }
}

fn close(what: &str, got: f64, want: f64) {
    let r = rel(got, want);
    println!("{what}: got {got:.15e}, want {want:.15e}, rel {r:.2e}");
    assert!(
        r <= 1e-6,
        "{what}: got {got}, want {want} (relative error {r:e})"
    );
}

#[test]
fn numpy_random_state_matches_numpy() {
    let f = Fix::load();
    let want: Vec<usize> = f
        .i64s("perm_2020_300")
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(NumpyRandomState::new(2020).permutation(300), want);
    let mut r = NumpyRandomState::new(2020);
    let mut got = r.choice_without_replacement(300, 100);
    got.extend(r.choice_without_replacement(250, 100));
    let want: Vec<usize> = f.i64s("choice_2020").iter().map(|&v| v as usize).collect();
    assert_eq!(got, want);
    // randint(0, 2**32, dtype=uint64) is the masked interval of 2³² − 1 on one word each.
    let mut r = NumpyRandomState::new(2020);
    let got: Vec<i64> = (0..8).map(|_| r.interval(u32::MAX as u64) as i64).collect();
    assert_eq!(got, f.i64s("u32_2020"));
}

#[test]
fn fid_and_sfid_match_torch_fidelity_and_adm() {
    let f = Fix::load();
    let (a, n1, d) = f.rows("pool_a");
    let (b, n2, _) = f.rows("pool_b");
    let s = GaussianStats::from_features(&a, n1, d).unwrap();
    let (mu, sigma) = (f.f64s("mu_a"), f.f64s("sigma_a"));
    let worst =
        s.mu.iter()
            .zip(&mu)
            .chain(s.sigma.iter().zip(&sigma))
            .map(|(&g, &w)| (g - w).abs())
            .fold(0.0, f64::max);
    assert!(worst < 1e-12, "statistics differ by {worst}");
    let fid = fid_from_features(&a, n1, &b, n2, d).unwrap();
    close("FID vs torch-fidelity", fid, f.f64s("fid")[0]);
    close("FID vs ADM", fid, f.f64s("fid_adm")[0]);
    let (sa, m1, ds) = f.rows("spatial_a");
    let (sb, m2, _) = f.rows("spatial_b");
    let sfid = fid_from_features(&sa, m1, &sb, m2, ds).unwrap();
    close("sFID vs ADM", sfid, f.f64s("sfid")[0]);
}

#[test]
fn inception_score_matches_torch_fidelity() {
    let f = Fix::load();
    let (l, n, c) = f.rows("logits");
    let cases = [
        ("is_shuffled", n, 10, Some(2020)),
        ("is_ordered", n, 10, None),
        ("is_297_7_seed7", 297, 7, Some(7)),
    ];
    for (name, rows, splits, seed) in cases {
        let want = f.f64s(name);
        let got = inception_score(&l[..rows * c], rows, c, splits, seed).unwrap();
        close(&format!("{name} mean"), got.mean, want[0]);
        close(&format!("{name} std"), got.std, want[1]);
    }
}

#[test]
fn kid_matches_torch_fidelity() {
    let f = Fix::load();
    let (a, n1, d) = f.rows("pool_a");
    let (b, n2, _) = f.rows("pool_b");
    // All pairs: no randomness, checked against a direct evaluation too.
    let want = f.f64s("kid_all");
    let opt = KidOptions {
        subsets: 1,
        subset_size: n2,
        seed: 2020,
    };
    let got = kid(&a[..n2 * d], n2, &b, n2, d, opt).unwrap();
    close("KID all pairs", got.mean, want[0]);
    assert_eq!(got.std, 0.0);
    let x: Vec<f64> = a[..n2 * d].iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    close(
        "MMD² all pairs",
        mmd2_unbiased_poly(&x, &y, n2, d).unwrap(),
        want[0],
    );
    // torch-fidelity's random subsets, drawn by the same numpy RandomState(2020).
    let want = f.f64s("kid_10x100");
    let opt = KidOptions {
        subsets: 10,
        subset_size: 100,
        seed: 2020,
    };
    let got = kid(&a, n1, &b, n2, d, opt).unwrap();
    close("KID 10x100 mean", got.mean, want[0]);
    close("KID 10x100 std", got.std, want[1]);
}

#[test]
fn precision_recall_match_adm() {
    let f = Fix::load();
    let (a, n1, d) = f.rows("pool_a");
    let (b, n2, _) = f.rows("pool_b");
    let radii = manifold_radii(&a, n1, d, ADM_NEIGHBOURS).unwrap();
    for (g, w) in radii.iter().zip(f.f64s("radii_a")) {
        assert!(rel(*g, w) < 1e-12, "radius {g} vs {w}");
    }
    let want = f.f64s("prec_recall");
    let pr = precision_recall(&a, n1, &b, n2, d, ADM_NEIGHBOURS).unwrap();
    close("precision", pr.precision, want[0]);
    close("recall", pr.recall, want[1]);
}

#[test]
fn bad_inputs_are_errors() {
    let x = vec![0.5f32; 12];
    assert!(inception_score(&x, 3, 4, 10, None).is_err());
    assert!(inception_score(&x, 3, 5, 1, None).is_err());
    assert!(inception_score(&[f32::NAN; 4], 2, 2, 1, None).is_err());
    let opt = KidOptions::default();
    assert!(kid(&x, 3, &x, 3, 4, opt).is_err());
    assert!(manifold_radii(&x, 3, 4, 3).is_err());
    assert!(fid_from_features(&x, 1, &x, 1, 12).is_err());
    assert!(precision_recall(&x, 3, &x, 2, 4, 1).is_err());
}

#[test]
fn identical_sets_are_perfect() {
    let x: Vec<f32> = (0..40).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let pr = precision_recall(&x, 10, &x, 10, 4, ADM_NEIGHBOURS).unwrap();
    assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
    let fid = fid_from_features(&x, 10, &x, 10, 4).unwrap();
    assert!(fid.abs() < 1e-9, "{fid}");
}
