//! `rae-cli stats` (§2.4.1): exact moments against a direct f64 computation over latents
//! encoded here, the reference's running rule against a direct implementation of it, the
//! written file read back by `store::load_stats`, and the reference `stat.pt` layout
//! (`{"mean": T, "var": T}`, written by PyTorch in `tests/fixtures/pt/stat.pt`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, ok, tiny_rae, tmp, write_rae_dir};
use rae_cli::commands::stats::{compute_stats, save_stats, StatsRule};
use rae_cli::data::{BatchOrder, Dataset, Shapes};
use rae_cli::presets;
use rae_cli::store;
use rae_core::json::parse_named;
use rae_core::models::Rae;
use rae_core::{Backend, CpuBackend, PhiloxKey};

/// Un-normalised latents of images `idx` (flipped when asked), `[C·h·w]` each.
fn encode(
    b: &CpuBackend,
    rae: &Rae<CpuBackend>,
    ds: &dyn Dataset,
    items: &[(usize, bool)],
) -> Vec<Vec<f64>> {
    let s = ds.image_size();
    items
        .iter()
        .map(|&(i, flip)| {
            let x = b
                .upload(&ds.image(i, flip).unwrap(), &[1, 3, s, s])
                .unwrap();
            let z = b.download(&rae.encode(b, &x).unwrap()).unwrap();
            z.into_iter().map(f64::from).collect()
        })
        .collect()
}

/// Mean and biased variance over the rows, per element.
fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let d = rows[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var = (0..d)
        .map(|j| rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n)
        .collect();
    (mean, var)
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn exact_statistics_equal_a_direct_computation() {
    let b = CpuBackend::new();
    let rae = tiny_rae(&b, 8, 4, 4);
    let ds = Shapes::new(16, 23, 5);
    let (mean, var) = compute_stats(&b, &rae, &ds, 5, StatsRule::Exact, false, 0).unwrap();
    let items: Vec<(usize, bool)> = (0..23).map(|i| (i, false)).collect();
    let (m, v) = moments(&encode(&b, &rae, &ds, &items));
    assert_eq!(mean.len(), 8 * 16);
    let (em, ev) = (max_abs(&mean, &m), max_abs(&var, &v));
    assert!(em <= 1e-5 && ev <= 1e-5, "mean error {em}, var error {ev}");
    // Non-trivial: the latents do vary.
    assert!(v.iter().sum::<f64>() > 1e-3);
}

#[test]
fn the_running_rule_follows_the_reference() {
    let b = CpuBackend::new();
    let rae = tiny_rae(&b, 8, 4, 4);
    let ds = Shapes::new(16, 23, 6);
    for flip in [false, true] {
        let (bs, seed) = (6usize, 9u64);
        let (mean, var) = compute_stats(&b, &rae, &ds, bs, StatsRule::Running, flip, seed).unwrap();
        // §2.4.1: running mean 0 and variance 1, then per batch
        // running ← 0.9·running + 0.1·(batch mean, biased batch variance).
        let d = 8 * 16;
        let (mut rm, mut rv) = (vec![0.0f64; d], vec![1.0f64; d]);
        let mut order = BatchOrder::new(seed, ds.len(), flip);
        for k in 0..ds.len().div_ceil(bs) {
            let n = bs.min(ds.len() - k * bs);
            let items: Vec<(usize, bool)> = order.batch(k as u64, bs).into_iter().take(n).collect();
            let (bm, bv) = moments(&encode(&b, &rae, &ds, &items));
            for j in 0..d {
                rm[j] = (1.0 - 0.1) * rm[j] + 0.1 * bm[j];
                rv[j] = (1.0 - 0.1) * rv[j] + 0.1 * bv[j];
            }
        }
        let (em, ev) = (max_abs(&mean, &rm), max_abs(&var, &rv));
        assert!(
            em <= 1e-5 && ev <= 1e-5,
            "flip {flip}: mean error {em}, var error {ev}"
        );
        // Four batches leave 0.9⁴ of the initial variance 1 in: not the exact moments.
        let (exact_m, exact_v) =
            compute_stats(&b, &rae, &ds, bs, StatsRule::Exact, false, seed).unwrap();
        let diff: f32 = var.iter().zip(&exact_v).map(|(a, b)| (a - b).abs()).sum();
        assert!(
            diff > 1.0,
            "running and exact variances should differ ({diff})"
        );
        let _ = exact_m;
    }
}

#[test]
fn written_statistics_load_back_and_the_command_writes_them() {
    let b = CpuBackend::new();
    let rae = tiny_rae(&b, 8, 4, 4);
    let d = tmp("stats-file");
    let dims = rae.latent_dims();
    let n: usize = dims.iter().product();
    let mean: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let var: Vec<f32> = (0..n)
        .map(|i| 0.5 + (i as f32 * 0.11).cos().abs())
        .collect();
    let p = d.join("s.safetensors");
    save_stats(&p, &mean, &var, dims).unwrap();
    let f = rae_cli::store::load_tensor_file(&p).unwrap();
    assert_eq!(f.tensors.get("mean").unwrap().shape, vec![8, 4, 4]);
    let s = store::load_stats(&b, &p).unwrap();
    assert_eq!(b.download(&s.mean).unwrap(), mean);
    assert_eq!(b.download(&s.var).unwrap(), var);
    // The command on a RAE folder: the same numbers as compute_stats on the built-in data.
    let rae_dir = d.join("rae");
    write_rae_dir(&b, &rae, &rae_dir, false);
    let out = d.join("cmd.safetensors");
    ok(&[
        "stats",
        "--rae",
        rae_dir.to_str().unwrap(),
        "--builtin-size",
        "20",
        "--batch-size",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    let loaded = store::load_stats(&b, &out).unwrap();
    let ds = Shapes::new(16, 20, rae_cli::data::BUILTIN_DATA_SEED);
    let reloaded = store::load_rae(
        &b,
        &store::RaePaths {
            stats: None,
            ..store::RaePaths::in_dir(&rae_dir)
        },
    )
    .unwrap();
    let (m, v) = compute_stats(&b, &reloaded, &ds, 8, StatsRule::Exact, false, 0).unwrap();
    assert_eq!(b.download(&loaded.mean).unwrap(), m);
    assert_eq!(b.download(&loaded.var).unwrap(), v);
}

fn expected_f32(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(fixture("pt/stat.expected.json")).unwrap();
    let v = parse_named(&text, "stat.expected.json").unwrap();
    let t = v
        .get("tensors")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t.get("name").unwrap().as_str() == Some(name))
        .unwrap();
    assert_eq!(
        t.get("shape").unwrap().as_array().unwrap().len(),
        3,
        "[8, 2, 2]"
    );
    t.get("f32_bits")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| f32::from_bits(x.as_f64().unwrap() as u32))
        .collect()
}

#[test]
fn the_reference_stat_pt_loads_and_normalises_latents() {
    let b = CpuBackend::new();
    let s = store::load_stats(&b, &fixture("pt/stat.pt")).unwrap();
    let (mean, var) = (expected_f32("mean"), expected_f32("var"));
    assert_eq!(b.download(&s.mean).unwrap(), mean);
    assert_eq!(b.download(&s.var).unwrap(), var);
    // In a RAE with [8, 2, 2] latents: z_norm = (z − mean)/sqrt(var + 1e-5) (§2.4).
    let mut rae = tiny_rae(&b, 8, 4, 2);
    rae.stats = Some(s.clone());
    presets::check_rae(&rae).unwrap();
    let z = b
        .fill_normal(&[3, 8, 2, 2], PhiloxKey::new(2, 2), 0)
        .unwrap();
    let zn = b.download(&s.normalize(&b, &z).unwrap()).unwrap();
    let zh = b.download(&z).unwrap();
    for (i, (got, x)) in zn.iter().zip(&zh).enumerate() {
        let j = i % 32;
        let want = (*x as f64 - mean[j] as f64) / (var[j] as f64 + 1e-5).sqrt();
        assert!(
            (*got as f64 - want).abs() < 1e-5,
            "element {i}: {got} vs {want}"
        );
    }
    // In a RAE whose latents have another size, the mismatch is named.
    let mut other = tiny_rae(&b, 8, 4, 4);
    other.stats = Some(s);
    let e = presets::check_rae(&other).unwrap_err().to_string();
    assert!(e.contains("32 values") && e.contains("[8, 4, 4]"), "{e}");
}
