#!/usr/bin/env python3
"""Write the parity fixture of the FID Inception-v3 feature extractor
(`rae-core/src/models/inception.rs`): torch-fidelity's `FeatureExtractorInceptionV3`
(`inception-v3-compat`, the pytorch-fid FID Inception with the TF1 bilinear resize) run on
the CPU in float32.

The network has ~24 M parameters (~95 MB), too many to commit, and random weights would not
keep activations O(1) through 90-odd layers. So:

* every conv weight, every batch-norm `weight`/`bias` and `fc.weight`/`fc.bias` is a
  deterministic function of its name and element index, `synthetic` of
  `tools/fixture_synthetic.py` (FNV-1a 64 of the name, splitmix64, `s` uniform in
  [-1, 1)): `s / sqrt(fan_in)` for tensors of >= 2 dims, `1 + 0.1 s` for 1-D `*weight`,
  `0.1 s` for other 1-D tensors; `tests/src/synthetic.rs` computes it bit for bit;
* the batch-norm `running_mean`/`running_var` (2 x 17,216 values) are calibrated in one
  eval-mode forward over the `a` images below, layer by layer (a pre-hook sets each batch
  norm's statistics from its input just before it runs): `running_var` = the input's
  per-channel variance, `running_mean` = its mean minus one standard deviation, so every
  normalised output is ~N(1, 1). Centred statistics (~N(0, 1)) leave half the ReLUs off and
  make this random network chaotic: PyTorch's own float32 result then differs from float64
  by 6e-5 on `pool`; with the shift, by 9e-6. They are stored under their own names.

The images are functions of integers too (`image(tag, h, w)` below: a per-channel gradient,
an 8-pixel checkerboard and hash noise, uint8; the Rust test rebuilds them and checks the
stored sums). Groups (one forward each, sizes H x W):

* `a`: 2 images 299 x 299 (no resize: the scale is exactly 1);
* `b`: 1 image 48 x 64 (upsampled);
* `c`: 1 image 427 x 640 (downsampled, non-integer scale on both axes).

Stored per group `g`: `sum_g` (int64 sum of the uint8 values, a check of the generator),
`pool_g` [N,2048] (`2048`), `logits_g` [N,1008] (`logits_unbiased`, fc without bias),
`logits_biased_g` [N,1008] (`logits`), `spatial_g` [N,2023] (sFID: the first 7 channels of
`Mixed_6d.branch1x1`'s output, the TF graph's `mixed_6/conv:0` tensor ADM's evaluator reads,
laid out NHWC as TF gives it, flattened (h, w, c)), and `resized_g` [3,W] = row H'/2 = 149
of the normalised 299 x 299 input of the first image (checks the resize alone).

Run by hand (not in CI), from the repository root, with torch and torch-fidelity installed:

    python tools/make_inception_fixtures.py            # writes tests/fixtures/inception_io.safetensors
    python tools/make_inception_fixtures.py OUT.pth    # also writes the full synthetic state dict
"""

import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from fixture_synthetic import hashes, synthetic

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
FEATURES = ["2048", "logits_unbiased", "logits"]
SHIFT = 1.0  # calibrated BN outputs ~ N(1, 1) before the affine: mostly active ReLUs
GROUPS = {"a": (2, 299, 299), "b": (1, 48, 64), "c": (1, 427, 640)}


def image(tag: str, h: int, w: int) -> np.ndarray:
    """uint8 [3, h, w]: (gradient + checker + noise) mod 256, integer arithmetic only:
    gradient = (255 x / max(w-1,1) * (c+1) + 255 y / max(h-1,1) * (3-c)) / 4 (floor
    divisions), checker = 48 when (x/8 + y/8) is odd, noise = hash >> 58 (0..63) with the
    hashes of `tag` over the element index (c, y, x) row-major."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    grad = ((255 * x) // max(w - 1, 1) * (c + 1) + (255 * y) // max(h - 1, 1) * (3 - c)) // 4
    checker = 48 * ((x // 8 + y // 8) % 2)
    noise = (hashes(tag, 3 * h * w) >> np.uint64(58)).astype(np.int64).reshape(3, h, w)
    return ((grad + checker + noise) % 256).astype(np.uint8)


def group_images(g: str) -> torch.Tensor:
    n, h, w = GROUPS[g]
    return torch.from_numpy(np.stack([image(f"inception.{g}.{i}", h, w) for i in range(n)]))


def build(path: str) -> FeatureExtractorInceptionV3:
    return FeatureExtractorInceptionV3(
        "inception-v3-compat", FEATURES, feature_extractor_weights_path=path
    )


def make_state_dict(tmp: str) -> dict:
    """The pretrained file's layout (names, shapes) with synthetic weights and calibrated
    batch-norm statistics."""
    # Construct without weights: load_state_dict is skipped for the skeleton only.
    empty = os.path.join(tmp, "empty.pth")
    torch.save({}, empty)
    orig = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, strict=True: None
    try:
        skeleton = build(empty)
    finally:
        FeatureExtractorInceptionV3.load_state_dict = orig
    with torch.no_grad():
        for name, t in skeleton.state_dict().items():
            if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            t.copy_(torch.from_numpy(synthetic(name, tuple(t.shape))))
    def calibrate(bn, inputs):
        x = inputs[0]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        bn.running_var.copy_(var)
        bn.running_mean.copy_(mean - SHIFT * var.sqrt())

    bns = [m for m in skeleton.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
    skeleton.eval()
    with torch.no_grad():
        skeleton(group_images("a"))
    for h in hooks:
        h.remove()
    return {k: v.clone().contiguous() for k, v in skeleton.state_dict().items()}


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        sd = make_state_dict(tmp)
        pth = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tmp, "synthetic.pth")
        torch.save(sd, pth)
        # The official constructor, strict load: the layout is the pretrained file's.
        model = build(pth)

    out = {k: v for k, v in sd.items() if k.endswith(("running_mean", "running_var"))}
    spatial = {}
    model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: spatial.update(x=o))
    for g in GROUPS:
        imgs = group_images(g)
        with torch.no_grad():
            pool, logits_u, logits = model(imgs)
            x = interpolate_bilinear_2d_like_tensorflow1x(
                imgs.float(), size=(299, 299), align_corners=False
            )
        x = (x - 128) / 128
        s = spatial["x"][:, :7].permute(0, 2, 3, 1).reshape(imgs.shape[0], -1)
        out[f"sum_{g}"] = torch.tensor([int(imgs.long().sum())], dtype=torch.int64)
        out[f"pool_{g}"] = pool.contiguous()
        out[f"logits_{g}"] = logits_u.contiguous()
        out[f"logits_biased_{g}"] = logits.contiguous()
        out[f"spatial_{g}"] = s.contiguous()
        out[f"resized_{g}"] = x[0, :, 149, :].contiguous()
        print(f"{g}: {tuple(imgs.shape)} |pool| mean {pool.mean():.4f} max {pool.max():.4f}; "
              f"logits std {logits_u.std():.4f}; spatial mean {s.mean():.4f}")
    path = os.path.join(ROOT, "inception_io.safetensors")
    save_file(out, path)
    os.chmod(path, 0o644)
    n_bn = sum(v.numel() for k, v in out.items() if k.endswith("running_mean"))
    print("torch", torch.__version__, "wrote", os.path.abspath(path), f"({n_bn} BN channels)")


if __name__ == "__main__":
    main()
