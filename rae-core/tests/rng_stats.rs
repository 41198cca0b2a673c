//! Philox random numbers through [`CpuBackend`]: addressing (a fill split at any offset
//! gives the same values; seeds and streams are independent sequences) and distribution
//! (moments, Kolmogorov–Smirnov, open interval) on 10⁶ draws.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rae_core::backend::Backend;
use rae_core::rng::{self, PhiloxStream};
use rae_core::{CpuBackend, PhiloxKey};

const BE: CpuBackend = CpuBackend::new();

/// Number of draws for the statistical tests.
const N_STAT: usize = 1_000_000;

fn uniforms(key: PhiloxKey, offset: u64, n: usize) -> Vec<f32> {
    BE.download(&BE.fill_uniform(&[n], key, offset).unwrap())
        .unwrap()
}

fn normals(key: PhiloxKey, offset: u64, n: usize) -> Vec<f32> {
    BE.download(&BE.fill_normal(&[n], key, offset).unwrap())
        .unwrap()
}

/// Proptest cases per property: 64, or `PROPTEST_CASES` when set (for longer soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Offsets near zero, anywhere, and just below the 2⁶⁴ wrap.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, any::<u64>(), (u64::MAX - 300)..=u64::MAX]
}

/// A length and a split point inside it.
fn split() -> impl Strategy<Value = (usize, usize)> {
    (0usize..300).prop_flat_map(|n| (Just(n), 0..=n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// `fill [0, n)` equals `fill [0, k)` followed by `fill [k, n)` started at `offset + k`,
    /// bit for bit, for uniforms and normals; and equals the host cursor drawn one by one.
    #[test]
    fn fills_split_at_any_offset(
        seed in any::<u64>(), stream in any::<u64>(), offset in offset(), (n, k) in split(),
    ) {
        let key = PhiloxKey::new(seed, stream);
        let off2 = offset.wrapping_add(k as u64);
        let whole = uniforms(key, offset, n);
        let mut parts = uniforms(key, offset, k);
        parts.extend(uniforms(key, off2, n - k));
        prop_assert_eq!(bits(&whole), bits(&parts));
        let whole_n = normals(key, offset, n);
        let mut parts_n = normals(key, offset, k);
        parts_n.extend(normals(key, off2, n - k));
        prop_assert_eq!(bits(&whole_n), bits(&parts_n));

        let mut cursor = PhiloxStream { key, position: offset };
        let one_by_one: Vec<f32> = (0..n).map(|_| cursor.uniform()).collect();
        prop_assert_eq!(bits(&whole), bits(&one_by_one));
        let mut cursor = PhiloxStream { key, position: offset };
        let one_by_one: Vec<f32> = (0..n).map(|_| cursor.normal()).collect();
        prop_assert_eq!(bits(&whole_n), bits(&one_by_one));
        prop_assert_eq!(cursor.position, offset.wrapping_add(n as u64));
    }
}

/// Large fills go through the threaded path, whose chunks start at positions that are not
/// multiples of four; they must still match the serial host fill and split anywhere.
#[test]
fn large_fills_match_the_serial_fill() {
    let key = PhiloxKey::new(7, 3);
    let n = 50_001;
    let offset = 1_000_003;
    let whole = normals(key, offset, n);
    let mut host = vec![0.0f32; n];
    rng::fill_normal(&mut host, key, offset);
    assert_eq!(bits(&whole), bits(&host));
    let k = 12_345;
    let mut parts = normals(key, offset, k);
    parts.extend(normals(key, offset + k as u64, n - k));
    assert_eq!(bits(&whole), bits(&parts));
    let whole_u = uniforms(key, offset, n);
    rng::fill_uniform(&mut host, key, offset);
    assert_eq!(bits(&whole_u), bits(&host));
}

/// Different seeds or streams (including their high 32-bit words) give unrelated
/// sequences: no position agrees beyond chance (2⁻²³ per position).
#[test]
fn different_streams_and_seeds_differ() {
    let keys = [
        PhiloxKey::new(1, 0),
        PhiloxKey::new(1, 1),
        PhiloxKey::new(2, 0),
        PhiloxKey::new(0, 1),
        PhiloxKey::new(1 << 32, 0),
        PhiloxKey::new(0, 1 << 32),
        PhiloxKey::new(2, 1),
        PhiloxKey::new(u64::MAX, u64::MAX),
    ];
    let n = 4096;
    let draws: Vec<(Vec<u32>, Vec<u32>)> = keys
        .iter()
        .map(|&k| (bits(&uniforms(k, 0, n)), bits(&normals(k, 0, n))))
        .collect();
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            for (what, a, b) in [
                ("uniform", &draws[i].0, &draws[j].0),
                ("normal", &draws[i].1, &draws[j].1),
            ] {
                let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
                assert!(
                    same <= 2,
                    "{what}: keys {:?} and {:?} agree at {same} of {n} positions",
                    keys[i],
                    keys[j]
                );
            }
        }
    }
    // The same key at another offset is the same sequence shifted, not a new one.
    let k = keys[0];
    assert_eq!(
        bits(&uniforms(k, 5, 100)),
        bits(&uniforms(k, 0, 105))[5..].to_vec()
    );
}

/// The uniform map never reaches 0 or 1, even at the extreme bit patterns.
#[test]
fn uniform_extremes_are_open() {
    let lo = rng::uniform_from_bits(0);
    let hi = rng::uniform_from_bits(u32::MAX);
    assert!(lo > 0.0 && lo < 1e-7, "u(0) = {lo}");
    assert!(hi < 1.0 && hi > 1.0 - 1e-7, "u(max) = {hi}");
}

/// Kolmogorov–Smirnov statistic of `xs` (sorted here) against the CDF `cdf`.
fn ks_statistic(xs: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len() as f64;
    let mut d = 0.0f64;
    for (i, &x) in xs.iter().enumerate() {
        let f = cdf(x);
        d = d.max((i + 1) as f64 / n - f).max(f - i as f64 / n);
    }
    d
}

/// Asymptotic KS critical value at significance `alpha` for `n` samples.
fn ks_critical(alpha: f64, n: usize) -> f64 {
    (-(alpha / 2.0).ln() / 2.0).sqrt() / (n as f64).sqrt()
}

/// 10⁶ uniforms: all in (0, 1) strictly, mean within 5 standard errors of ½, and a KS test
/// against U(0, 1) at significance 10⁻³.
#[test]
fn uniform_distribution() {
    for key in [PhiloxKey::new(2024, 0), PhiloxKey::new(99, 7)] {
        let u = uniforms(key, 0, N_STAT);
        assert!(
            u.iter().all(|&x| x > 0.0 && x < 1.0),
            "a uniform outside (0, 1)"
        );
        let n = N_STAT as f64;
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n;
        let se = (1.0 / 12.0 / n).sqrt();
        assert!(
            (mean - 0.5).abs() < 5.0 * se,
            "{key:?}: uniform mean {mean}"
        );
        let mut xs: Vec<f64> = u.iter().map(|&x| x as f64).collect();
        let d = ks_statistic(&mut xs, |x| x.clamp(0.0, 1.0));
        let crit = ks_critical(1e-3, N_STAT);
        eprintln!("uniform {key:?}: KS D = {d:.3e} (critical {crit:.3e})");
        assert!(
            d < crit,
            "{key:?}: KS statistic {d} above the critical value {crit}"
        );
    }
}

/// 10⁶ normals: finite, mean and variance within 5 standard errors (`1/√n` and `√(2/n)`),
/// the two-sided 3σ tail mass within 5 binomial standard errors, a KS test against Φ at
/// significance 10⁻³, and no correlation between neighbours (Box–Muller pairs share a
/// radius).
#[test]
fn normal_distribution() {
    for key in [PhiloxKey::new(2024, 1), PhiloxKey::new(5, 1 << 40)] {
        let z = normals(key, 0, N_STAT);
        assert!(z.iter().all(|x| x.is_finite()), "a normal is not finite");
        let n = N_STAT as f64;
        let zs: Vec<f64> = z.iter().map(|&x| x as f64).collect();
        let mean = zs.iter().sum::<f64>() / n;
        let var = zs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        eprintln!("normal {key:?}: mean {mean:.2e}, variance {var:.5}");
        assert!(mean.abs() < 5.0 / n.sqrt(), "{key:?}: normal mean {mean}");
        assert!(
            (var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
            "{key:?}: normal variance {var}"
        );
        let p_tail = libm::erfc(3.0 / 2f64.sqrt());
        let tail = zs.iter().filter(|x| x.abs() > 3.0).count() as f64 / n;
        let se_tail = (p_tail * (1.0 - p_tail) / n).sqrt();
        assert!(
            (tail - p_tail).abs() < 5.0 * se_tail,
            "{key:?}: P(|z| > 3) = {tail}, want {p_tail}"
        );
        let lag1 = zs.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (n - 1.0);
        assert!(
            lag1.abs() < 5.0 / n.sqrt(),
            "{key:?}: lag-1 correlation {lag1}"
        );
        let mut xs = zs;
        let d = ks_statistic(&mut xs, |x| 0.5 * libm::erfc(-x / 2f64.sqrt()));
        let crit = ks_critical(1e-3, N_STAT);
        eprintln!("normal {key:?}: KS D = {d:.3e} (critical {crit:.3e})");
        assert!(
            d < crit,
            "{key:?}: KS statistic {d} above the critical value {crit}"
        );
    }
}
