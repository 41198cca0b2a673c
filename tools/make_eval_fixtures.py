"""Reference values of the generation metrics on random feature arrays (spec §6.1), and
numpy-written .npz files for the npz reader.

Run with a Python that has numpy, scipy, torch, torch-fidelity (0.4.0) and safetensors:

    python tools/make_eval_fixtures.py

Writes
  tests/fixtures/eval_metrics.safetensors   features (f32) and reference values (f64)
  tests/fixtures/npz/*.npz                  small arrays written by numpy itself

FID, IS and KID come from torch-fidelity's own functions on float64 copies of the features
(so the reference is the formula at f64, not float32 rounding). sFID, precision and recall
follow the logic of OpenAI's ADM evaluator (guided-diffusion/evaluations/evaluator.py),
restated below in numpy with exact float64 distances (ADM computes them in float16).
"""

import os

import numpy as np
import torch
from scipy import linalg
from safetensors.numpy import save_file
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def adm_frechet(mu1, sigma1, mu2, sigma2):
    """ADM's FIDStatistics.frechet_distance: sqrtm of the product, real part, trace."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def adm_stats(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def sq_dists(u, v):
    """Pairwise squared Euclidean distances, exact in float64."""
    return ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)


def adm_radii(x, k=3):
    """ManifoldEstimator.manifold_radii: index k of each sorted row, the point itself included."""
    d = sq_dists(x, x)
    return np.partition(d, k, axis=1)[:, k]


def adm_precision_recall(ref, sample, k=3):
    """ManifoldEstimator.evaluate_pr with one neighbourhood size."""
    r_ref, r_s = adm_radii(ref, k), adm_radii(sample, k)
    d = sq_dists(ref, sample)  # [n_ref, n_sample]
    sample_in = (d <= r_ref[:, None]).any(axis=0)
    ref_in = (d <= r_s[None, :]).any(axis=1)
    return float(sample_in.mean()), float(ref_in.mean())


def kid_kwargs(subsets, size, seed=2020):
    return dict(
        kid_subsets=subsets,
        kid_subset_size=size,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=seed,
        verbose=False,
    )


def metrics():
    rng = np.random.default_rng(15)
    n1, n2, d, ds, c = 300, 250, 32, 16, 100
    # Two feature sets with different means, scales and correlations, overlapping enough
    # that precision and recall are strictly between 0 and 1.
    mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    pool_a = rng.normal(size=(n1, d)).astype(np.float32)
    pool_b = (rng.normal(size=(n2, d)) @ mix * 1.3 + 0.4).astype(np.float32)
    spatial_a = np.abs(rng.normal(size=(n1, ds))).astype(np.float32)
    spatial_b = (np.abs(rng.normal(size=(n2, ds))) * 1.2 + 0.1).astype(np.float32)
    logits = (rng.normal(size=(n1, c)) * 3.0).astype(np.float32)
    logits[:, :5] += 4.0 * rng.normal(size=(n1, 1)).astype(np.float32)

    t = lambda x: torch.from_numpy(x.astype(np.float64))
    out = {
        "pool_a": pool_a,
        "pool_b": pool_b,
        "spatial_a": spatial_a,
        "spatial_b": spatial_b,
        "logits": logits,
    }
    s1 = fid_features_to_statistics(t(pool_a))
    s2 = fid_features_to_statistics(t(pool_b))
    out["mu_a"], out["sigma_a"] = s1["mu"], s1["sigma"]
    out["fid"] = np.array(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])
    out["fid_adm"] = np.array(adm_frechet(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"]))
    ma, sa = adm_stats(spatial_a.astype(np.float64))
    mb, sb = adm_stats(spatial_b.astype(np.float64))
    out["sfid"] = np.array(adm_frechet(ma, sa, mb, sb))

    isc = isc_features_to_metric(t(logits), splits=10, shuffle=True, rng_seed=2020)
    out["is_shuffled"] = np.array([isc["inception_score_mean"], isc["inception_score_std"]])
    isc = isc_features_to_metric(t(logits), splits=10, shuffle=False)
    out["is_ordered"] = np.array([isc["inception_score_mean"], isc["inception_score_std"]])
    isc = isc_features_to_metric(t(logits[:297]), splits=7, shuffle=True, rng_seed=7)
    out["is_297_7_seed7"] = np.array([isc["inception_score_mean"], isc["inception_score_std"]])

    # KID on all pairs (subset size = n, one subset: the draw only permutes rows).
    k = kid_features_to_metric(t(pool_a[:n2]), t(pool_b), **kid_kwargs(1, n2))
    out["kid_all"] = np.array([k["kernel_inception_distance_mean"], k["kernel_inception_distance_std"]])
    # KID with torch-fidelity's random subsets (numpy RandomState(2020)).
    k = kid_features_to_metric(t(pool_a), t(pool_b), **kid_kwargs(10, 100))
    out["kid_10x100"] = np.array([k["kernel_inception_distance_mean"], k["kernel_inception_distance_std"]])

    p, r = adm_precision_recall(pool_a.astype(np.float64), pool_b.astype(np.float64))
    out["prec_recall"] = np.array([p, r])
    out["radii_a"] = adm_radii(pool_a.astype(np.float64))

    # numpy's legacy RNG, for the MT19937 port.
    out["perm_2020_300"] = np.random.RandomState(2020).permutation(300).astype(np.int64)
    rs = np.random.RandomState(2020)
    out["choice_2020"] = np.concatenate(
        [rs.choice(300, 100, replace=False), rs.choice(250, 100, replace=False)]
    ).astype(np.int64)
    out["u32_2020"] = np.random.RandomState(2020).randint(0, 2**32, size=8, dtype=np.uint64).astype(np.int64)

    os.makedirs(ROOT, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, os.path.join(ROOT, "eval_metrics.safetensors"))
    for k in ("fid", "fid_adm", "sfid", "is_shuffled", "is_ordered", "kid_all", "kid_10x100", "prec_recall"):
        print(k, out[k])


def npz_files():
    d = os.path.join(ROOT, "npz")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(16)
    f32 = rng.normal(size=(3, 4, 5)).astype(np.float32)
    f64 = rng.normal(size=(6, 7))
    u8 = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    i64 = np.arange(-5, 7, dtype=np.int64).reshape(3, 4)
    i32 = np.arange(10, dtype=np.int32) * -3
    np.savez(os.path.join(d, "plain.npz"), a=f32, b=f64, c=u8, d=i64, e=i32, s=np.float64(2.5))
    np.savez_compressed(os.path.join(d, "compressed.npz"), a=f32, b=f64, c=u8, d=i64, e=i32, s=np.float64(2.5))
    np.savez(os.path.join(d, "fortran.npz"), a=np.asfortranarray(f32), b=np.asfortranarray(f64))
    np.savez(os.path.join(d, "positional.npz"), u8, f32)  # arr_0, arr_1
    big = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    np.savez(os.path.join(d, "bigendian.npz"), a=big)
    np.savez(os.path.join(d, "unsupported.npz"), a=np.ones(3, dtype=np.complex64))
    # A .npy of format version 2.0 and 3.0 (numpy writes them when asked).
    for ver in ((2, 0), (3, 0)):
        with open(os.path.join(d, f"v{ver[0]}.npy"), "wb") as fh:
            np.lib.format.write_array(fh, f32, version=ver)
    # ADM-style reference batch: images plus precomputed statistics.
    pool = rng.normal(size=(20, 8))
    spatial = rng.normal(size=(20, 5))
    np.savez(
        os.path.join(d, "adm_ref.npz"),
        arr_0=u8,
        mu=pool.mean(0),
        sigma=np.cov(pool, rowvar=False),
        mu_s=spatial.mean(0),
        sigma_s=np.cov(spatial, rowvar=False),
    )


if __name__ == "__main__":
    metrics()
    npz_files()
