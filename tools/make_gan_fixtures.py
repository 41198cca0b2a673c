#!/usr/bin/env python3
"""Write the parity fixtures of the stage-1 GAN / perceptual-loss machinery: the reference's
`src/disc/` (LPIPS, DINO discriminator, DiffAug, GAN losses) and `calculate_adaptive_weight`
of `src/train_stage1.py`, plus the PyTorch ops they are built from. Everything is float32 on
the CPU; the reference source is imported from `--reference` (a checkout of the RAE repo; its
`src/` goes on `sys.path`). Nothing is downloaded: torchvision's `vgg16` is patched to build a
synthetic network (below) and `LPIPS._load_pretrained_weights` is patched to a no-op.

    /tmp/tv/bin/python tools/make_gan_fixtures.py [--reference /tmp/RAE] [--out tests/fixtures]

Needs torch, torchvision, safetensors, numpy and the `lpips` PyPI package (0.1.4). Gradients
are always those of `sum(y * g)` for a stored random cotangent `g`/`dy`/`G` unless stated.

`gan_ops.safetensors` -- PyTorch's own ops, inputs from `torch.manual_seed(20250101)`:

    resize_down. resize_up. resize_224.
        F.interpolate(x, size, mode="bilinear", align_corners=False), no antialias:
        x [2,3,20,18] -> (16,12); x [1,2,5,7] -> (9,11); x [1,1,256,256] -> (224,224).
        Keys x, y, dy, dx (dx = d sum(y*dy) / dx).
    conv1d_k9. conv1d_k1. conv1d_k9_short.
        nn.Conv1d(c, o, k, padding=k//2, padding_mode="circular"): x [2,6,10] o=5 k=9;
        x [2,6,10] o=5 k=1; x [1,3,4] o=2 k=9 (PyTorch needs pad <= length: 4 <= 4).
        Keys x, weight [o,c,k], bias [o], y, dy, dx, dweight, dbias.
    leaky.  LeakyReLU(0.2) on x [3,7] with exact zeros (x[0,0:3], x[1,2]; x[2,0] = -0.0) and
            negatives; x, y, dy, dx (PyTorch's derivative at exactly 0 is the negative slope
            0.2: `x > 0 ? 1 : 0.2`).
    bnl.    the reference's BatchNormLocal (virtual_bs 1, eps 1e-6) on x [2,4,7] = [B,C,L]:
            per sample and channel, mean/biased variance over L, affine weight/bias [4].
            Keys x, weight, bias, y, dy, dx, dweight, dbias.
    sn.     spectral norm exactly as the reference's SpectralConv1d (SpectralNorm.apply,
            n_power_iterations 1, dim 0, eps 1e-12) on a Conv1d(6, 5, 3): weight_orig
            [5,6,3], u0 [5], v0 [18] (the buffers before); TRAIN-mode forward (one power
            iteration: v = normalize(W^T u), then u = normalize(W v), W = weight_orig viewed
            [5,18]; buffers updated in place): u1, v1, weight_train = W / (u1 . W v1);
            G [5,6,3] and dweight_train = d sum(weight_train * G) / d weight_orig (u, v are
            constants: the gradient flows through W and through sigma = u^T W v). Then
            EVAL mode (no iteration, uses u1, v1): weight_eval (== weight_train), dweight_eval.

`gan_lpips.safetensors` -- the reference `LPIPS` (src/disc/lpips.py), eval mode (dropout
off), on a synthetic VGG-16: every tensor of torchvision's `vgg16().features` state dict,
under its torchvision name `features.{i}.weight|bias` (i in 0,2,5,7,10,12,14,17,19,21,24,26,28)
is `synthetic(name, shape)` (the formula below, `tests/src/synthetic.rs`), and every conv
WEIGHT (not bias) is then multiplied, in float32, by VGG_GAIN = float32(sqrt(6)) =
2.4494898 (stored as `vgg_gain`, shape []). Why: synthetic weights are uniform with variance
1/(3 fan_in); with the ReLU halving the second moment each layer scales it by 1/6, so
without the gain the features shrink ~1e-5 after 13 convs and the biases (0.1 s) dominate,
making the features nearly input-independent. sqrt(6) keeps the RMS O(1) at all taps (the
script prints the per-tap RMS). These weights are not stored. The five linear heads
`lin{k}.model.1.weight` [1,C,1,1] are `abs(synthetic(name, shape))` with the reference's
module name `lin{k}.model.1.weight` (abs: the real LPIPS heads are non-negative); stored as
`lin{k}.weight`. Inputs `x0` (the "real", LPIPS's first argument) and `x1` (the
"reconstruction", second) [2,3,32,32] uniform in [-1,1]. Outputs: `value` [] (reduction
"mean"), `per_sample` [2] (reduction "none", flattened), `dx0`, `dx1` = d value / d x0, x1,
`tap{k}` [2] = the spatial mean of lin_k's output per sample (per_sample = sum_k tap{k}).
Tap k is the output of ReLU relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (features indices
3, 8, 15, 22, 29); each feature is divided by (its L2 norm over channels + 1e-10).
`real.*`: the `lpips` package, `lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True)`,
eval, with the same synthetic (gained) VGG and its shipped linear weights
`lpips/weights/v0.1/vgg.pth` (md5 d507d7349b931f0638a25a48a722f98a, the same file the
reference downloads as `vgg_lpips`; keys lin{0..4}.model.1.weight [1,C,1,1]): `real.value`
[] = mean over the batch of its output on (x0, x1), `real.per_sample` [2], `real.dx1`.
The v0.1 weights themselves are not stored (the Rust side ships them separately).

`gan_disc.safetensors` -- the reference `DinoDisc` (src/disc/dinodisc.py) with a tiny recipe
injected into its `recipes` dict: "tiny" = depth 4, patch 8, in_chans 3, embed_dim 32,
2 heads, mlp_ratio 4, norm_eps 1e-6; DinoDisc(ks=9, key_depths=(0, 2), norm_type="bn",
using_spec_norm=True, norm_eps=1e-6, recipe="tiny"). The DINO checkpoint (real DINO ViT
layout) is seeded random with realistic scales and loaded through DinoDisc's constructor,
which zeroes the KEY third of every `blocks.{i}.attn.qkv.bias` (the stored values are the
checkpoint as given, before zeroing): stored as `dino.<name>`. Head parameters are perturbed
after construction (weight_orig += 0.5 std(weight_orig) N(0,1), biases and BN weight/bias
+= 0.2 N(0,1)), then the `weight_u`/`weight_v` buffers are warmed by 3 power iterations
(SpectralNorm.apply's random u, v give u^T W v near 0 or negative: eval-mode weights blown up
x100 with a sign flip) and v is then nudged (v <- normalize(v + 0.3 N(0,1)/sqrt(len v))) so
that the one-row final conv, which one iteration converges exactly (u = +-1,
v = +-W/|W|), still differs between eval and train; the heads' state dict is stored under its names in `DinoDisc.state_dict()`
(`heads.{h}.0.0.weight_orig|weight_u|weight_v|bias`, `heads.{h}.0.1.weight|bias` (BN),
`heads.{h}.1.fn.0.*`, `heads.{h}.1.fn.1.*`, `heads.{h}.2.*`). Input `x` [2,3,64,64]
uniform in [-1,1] (the backbone resizes it to 224 bilinearly, then x*0.5/std + (0.5-mean)/std).
Activation order (the heads' order): the LAST block's output first (before the final
`norm`, which is loaded but never applied), then the key depths in increasing order
(blocks 0, 2), each the patch tokens without CLS as [B, C, 784].

    act{k}      [2,32,784] dino_proxy[0](x) in eval mode, k in 0..3 in the order above.
    eval.logits [2,2352] the discriminator in eval mode (no power iteration), heads
                concatenated along dim 1 in the order above (784 tokens each);
    eval.g, eval.dx  cotangent and d sum(logits*g) / dx (the generator's path).
    train.*     a fresh copy with the same state in train mode (each SpectralConv1d runs ONE
                power iteration per forward call, before using u, v): train.logits,
                train.u.<prefix>, train.v.<prefix> the buffers after that forward (prefix =
                the SpectralConv1d's module path, e.g. heads.0.0.0), train.g, train.dx and
                train.grad.<name> for every trainable head parameter (weight_orig, bias,
                BN weight/bias) of d sum(logits*g). The biases of the two convs that feed a
                BatchNormLocal get ~1e-6 (0 in exact arithmetic: the norm removes them, and
                the 1/sigma scale too), so compare those absolutely.

`gan_diffaug.safetensors` -- the reference `DiffAug(prob=1.0, cutout=0.0).aug(x)`, x [2,3,16,16],
with its randomness replaced: inside the diffaug module `torch.rand(3)` returns zeros (all
three of translation, colour, cutout on) and `torch.rand(7, B, 1, 1)` returns `rand`
(stored [7,2]). Keys x, rand, y, g, dx. `cut.y`, `cut.dx`: the same with cutout=0.2 (a 3x3
square: round(16*0.2) = 3). (With cutout=0.0 the cutout branch still runs but its window is
empty.)

`gan_losses.safetensors` -- `hinge_d_loss`, `vanilla_d_loss`, `vanilla_g_loss` (mean
reduction) on `logits_real`, `logits_fake` [2,10]: `hinge_d`, `vanilla_d`, `vanilla_g` [] and
`hinge_d.dreal`, `hinge_d.dfake`, `vanilla_g.dfake` (their gradients). Adaptive weight toy:
`W` [3,4] (the "last layer"), `v` [5,4], `t` [5,3], `c` [3]; p = v @ W^T [5,3];
recon = mean|p - t|; gan = -mean(p @ c); `lambda` [] = calculate_adaptive_weight(recon, gan,
W) (||d recon/dW|| / (||d gan/dW|| + 1e-6), clamped to [0, 1e4], detached), `recon`, `gan`
[], and `dW` [3,4] = d (recon + 0.75 * lambda * gan) / dW with lambda a constant.

`gan_step.safetensors` -- ONE generator step and ONE discriminator step of src/train_stage1.py
(lines ~370-445; loss config of configs/stage1/training: hinge D loss, vanilla G loss,
perceptual_weight 1.0, disc_weight 0.75, max_d_weight 1e4), on small models:
  decoder: the reference's GeneralDecoder with tests/fixtures/decoder_config.json (through the
    reference's ViTMAEConfig; dropout probabilities 0, so train/eval mode give the same
    numbers) and the state dict tests/fixtures/decoder.safetensors. As train_stage1 does
    `decoder.requires_grad_(True)`, EVERY parameter is trainable, the sin-cos
    `decoder_pos_embed` (created with requires_grad=False) included. Input `tokens` [2,256,32]
    (torch.Generator seed 20250108, randn) straight into the decoder (RAE.decode without
    latent normalisation; the encoder, and its train-mode noising, are bypassed);
    x_hat = unpatchify(logits) * image_std + image_mean (per channel, ImageNet, stored [3]).
  images: x [2,3,256,256] in [0,1], NOT stored: x = float32(hashes("gan_step.x", 2*3*256*256)
    >> 40) * 2^-24, reshaped row-major to [2,3,256,256] (`hashes` as `synthetic` below).
  LPIPS: the reference LPIPS, eval mode (train_stage1 calls lpips.eval(): the heads' Dropout is
    off), frozen, on a TINY VGG with VGG-16's `features` layout and indices (convs at
    VGG_CONVS, ReLU after each, max-pools at 4, 9, 16, 23; taps at VGG_TAPS) but channels
    [4,4], [8,8], [8,8,8], [16,16,16], [16,16,16]; weights synthetic("features.{i}.weight") *
    VGG_GAIN, biases synthetic("features.{i}.bias"); heads (rebuilt at these widths)
    `lin{k}.model.1.weight` [1,C,1,1] = abs(synthetic(name)), stored as `lin{k}.weight`.
    Called as lpips(real_normed, recon_normed) = lpips(2x - 1, 2 x_hat - 1), reduction mean.
  discriminator: DinoDiscriminator (src/disc/discriminator.py: forward(fake, real) =
    classify(fake) then classify(real)) built exactly as for gan_disc.safetensors, loading its
    `dino.*` checkpoint and `heads.*` state from that file (not stored again).
  DiffAug(prob=1.0, cutout=0.0) with torch.rand(3) = 0 and torch.rand(7,B,1,1) = a stored
    [7,2] table (rows: translation h, w = floor(r*65) - 32 at 256 px; brightness, saturation,
    contrast; cutout offsets, unused as the cutout window is empty): `gen.rand` (h -20, 13;
    w 7, -29), `disc.rand_fake` (h 25, -3; w -11, 17), `disc.rand_real` (h -8, 30; w 2, -16).
  Generator step (discriminator in EVAL mode: no power iteration, buffers unchanged):
    l1 = mean|x_hat - x|; lpips; recon = l1 + 1.0 lpips; logits = D(aug(2 x_hat - 1, gen.rand));
    gan = -mean(logits); lambda = calculate_adaptive_weight(recon, gan, decoder_pred.weight,
    1e4) (the reference's function: grad norms w.r.t. decoder_pred.weight, detached);
    total = recon + 0.75 lambda gan. Keys `gen.l1`, `gen.lpips`, `gen.gan`, `gen.lambda`,
    `gen.total` [], `gen.logits_fake` [2,2352], `gen.xhat_sum` [2,3] (sum of x_hat over
    pixels), `gen.dxhat_sum` [2,3] (sum over pixels of d total / d x_hat) and
    `gen.grad.<name>` = d total / d p for every decoder parameter under its
    decoder.safetensors name (decoder_pos_embed and trainable_cls_token included). The
    query/key bias gradients are ~1e-10 (0 in exact arithmetic: softmax ignores them).
  Discriminator step with the SAME decoder weights (the script takes no optimiser step in
    between; train_stage1 would decode with the updated weights): under no_grad
    x_hat again (decoder in eval mode; identical to the generator step's), f = clamp(2 x_hat - 1,
    -1, 1), f = round((f + 1) * 127.5) / 127.5 - 1 (torch.round: half to even);
    fake_input = aug(f, disc.rand_fake), THEN real_input = aug(2x - 1, disc.rand_real);
    a fresh copy of the gan_disc state in TRAIN mode: logits_fake = D(fake_input), then
    logits_real = D(real_input) (each forward does one power iteration per spectral conv, so
    the real forward uses u, v after two iterations); loss = hinge_d_loss(logits_real,
    logits_fake). Keys `disc.loss`, `disc.accuracy` = mean(logits_real > logits_fake) [],
    `disc.logits_fake`, `disc.logits_real` [2,2352], `disc.fake_sum` [2,3] (sum of the
    discretised f before augmentation), `disc.grad.heads.<...>` for every trainable head
    parameter (d loss / d p through both forwards; the conv biases before a BatchNormLocal
    get ~1e-8: compare absolutely) and `disc.u.<prefix>`, `disc.v.<prefix>` the buffers after
    the step (prefix = the SpectralConv1d's path, e.g. heads.0.0.0).
  Also `tokens`, `image_mean`, `image_std`, `lin{k}.weight`, and the three rand tables.

synthetic(name, shape) (tools/fixture_synthetic.py): FNV-1a 64 of the name, splitmix64 of
(hash + (i+1) * golden), s = (z >> 40) * 2^-24 * 2 - 1 in float32; s / sqrt(numel / shape[0])
for rank >= 2, 1 + 0.1 s for rank-1 names ending in "weight", 0.1 s otherwise.
"""

import argparse
import ast
import copy
import math
import os
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from fixture_synthetic import hashes, synthetic

VGG_GAIN = np.float32(math.sqrt(6.0))
VGG_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG_TAPS = [3, 8, 15, 22, 29]
SN_WARMUP = 3


def det(d):
    return {k: v.detach().clone().contiguous().float() for k, v in d.items()}


def save(out, path):
    for k, v in out.items():
        assert torch.isfinite(v).all(), f"{path}: {k} is not finite"
    save_file(out, path, metadata={"torch": torch.__version__})
    os.chmod(path, 0o644)
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


# ---------------------------------------------------------------------------------------------
# gan_ops


def make_ops(path, ref):
    from disc.dinodisc import BatchNormLocal, SpectralConv1d

    torch.manual_seed(20250101)
    out = {}

    for case, shape, size in [
        ("resize_down", (2, 3, 20, 18), (16, 12)),
        ("resize_up", (1, 2, 5, 7), (9, 11)),
        ("resize_224", (1, 1, 256, 256), (224, 224)),
    ]:
        x = torch.randn(*shape, requires_grad=True)
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        dy = torch.randn_like(y)
        (y * dy).sum().backward()
        out.update({f"{case}.{k}": v for k, v in det(dict(x=x, y=y, dy=dy, dx=x.grad)).items()})

    for case, (b, c, l), o, k in [
        ("conv1d_k9", (2, 6, 10), 5, 9),
        ("conv1d_k1", (2, 6, 10), 5, 1),
        ("conv1d_k9_short", (1, 3, 4), 2, 9),
    ]:
        conv = nn.Conv1d(c, o, k, padding=k // 2, padding_mode="circular")
        with torch.no_grad():
            conv.bias.normal_(0, 0.5)
        x = torch.randn(b, c, l, requires_grad=True)
        y = conv(x)
        dy = torch.randn_like(y)
        (y * dy).sum().backward()
        d = dict(x=x, weight=conv.weight, bias=conv.bias, y=y, dy=dy, dx=x.grad,
                 dweight=conv.weight.grad, dbias=conv.bias.grad)
        out.update({f"{case}.{kk}": v for kk, v in det(d).items()})

    x = torch.randn(3, 7)
    x[0, :3] = 0.0
    x[1, 2] = 0.0
    x[2, 0] = -0.0
    x.requires_grad_(True)
    y = nn.LeakyReLU(0.2)(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    out.update({f"leaky.{k}": v for k, v in det(dict(x=x, y=y, dy=dy, dx=x.grad)).items()})

    bnl = BatchNormLocal(4, eps=1e-6)
    with torch.no_grad():
        bnl.weight.copy_(1 + 0.3 * torch.randn(4))
        bnl.bias.copy_(0.3 * torch.randn(4))
    x = (torch.randn(2, 4, 7) * 2 + 0.5).requires_grad_()
    y = bnl(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    d = dict(x=x, weight=bnl.weight, bias=bnl.bias, y=y, dy=dy, dx=x.grad,
             dweight=bnl.weight.grad, dbias=bnl.bias.grad)
    out.update({f"bnl.{k}": v for k, v in det(d).items()})

    sn = SpectralConv1d(6, 5, kernel_size=3, padding=1)
    out["sn.weight_orig"] = sn.weight_orig.detach().clone()
    out["sn.u0"] = sn.weight_u.clone()
    out["sn.v0"] = sn.weight_v.clone()
    G = torch.randn(5, 6, 3)
    probe = torch.randn(1, 6, 4)
    sn.train()
    sn(probe)  # pre-hook: one power iteration, sets sn.weight
    w = sn.weight
    (w * G).sum().backward()
    out["sn.u1"] = sn.weight_u.clone()
    out["sn.v1"] = sn.weight_v.clone()
    out["sn.weight_train"] = w.detach().clone()
    out["sn.G"] = G
    out["sn.dweight_train"] = sn.weight_orig.grad.clone()
    sn.weight_orig.grad = None
    sn.eval()
    sn(probe)
    w = sn.weight
    (w * G).sum().backward()
    assert torch.equal(sn.weight_u, out["sn.u1"]) and torch.equal(sn.weight_v, out["sn.v1"])
    out["sn.weight_eval"] = w.detach().clone()
    out["sn.dweight_eval"] = sn.weight_orig.grad.clone()
    # Check the semantics described in the docstring.
    W = out["sn.weight_orig"].reshape(5, -1)
    v1 = F.normalize(W.t() @ out["sn.u0"], dim=0, eps=1e-12)
    u1 = F.normalize(W @ v1, dim=0, eps=1e-12)
    assert torch.allclose(v1, out["sn.v1"]) and torch.allclose(u1, out["sn.u1"])
    sigma = torch.dot(u1, W @ v1)
    print(f"sn: sigma {sigma:.5f}, true {torch.linalg.matrix_norm(W, 2):.5f}")
    save(det(out), path)


# ---------------------------------------------------------------------------------------------
# gan_lpips


def synthetic_vgg_state():
    import torchvision

    sd = torchvision.models.vgg16(weights=None).features.state_dict()
    out = {}
    for k, t in sd.items():
        name = "features." + k
        v = synthetic(name, tuple(t.shape))
        if name.endswith("weight"):
            v = (v * VGG_GAIN).astype(np.float32)
        out[k] = torch.from_numpy(v)
    return out


class patched_vgg16:
    """torchvision.models.vgg16 -> a weightless VGG-16 whose `features` carry the synthetic
    weights (both the reference and the lpips package look the attribute up at call time)."""

    def __enter__(self):
        import torchvision

        self.tv = torchvision.models
        self.orig = self.tv.vgg16
        orig, state = self.orig, synthetic_vgg_state()

        def fake(*args, **kwargs):
            m = orig(weights=None)
            m.features.load_state_dict(state)
            return m

        self.tv.vgg16 = fake
        return self

    def __exit__(self, *exc):
        self.tv.vgg16 = self.orig


def make_lpips(path, ref):
    import disc.lpips as rl
    import lpips as lp

    torch.manual_seed(20250102)
    orig_load = rl.LPIPS._load_pretrained_weights
    rl.LPIPS._load_pretrained_weights = lambda self, name="vgg_lpips": None
    try:
        with patched_vgg16():
            model = rl.LPIPS()
            real = lp.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    finally:
        rl.LPIPS._load_pretrained_weights = orig_load
    model.eval()
    real.eval()
    synth = synthetic_vgg_state()
    # Check every VGG weight landed: reference slices re-index, the package keeps indices.
    ref_feats = [m for s in (model.net.slice1, model.net.slice2, model.net.slice3,
                             model.net.slice4, model.net.slice5) for m in s]
    for i in VGG_CONVS:
        for p in ("weight", "bias"):
            assert torch.equal(getattr(ref_feats[i], p), synth[f"{i}.{p}"])
            slice_k = 1 + sum(i >= b for b in (4, 9, 16, 23))
            pk = getattr(getattr(real.net, f"slice{slice_k}"), str(i))
            assert torch.equal(getattr(pk, p), synth[f"{i}.{p}"])

    out = {"vgg_gain": torch.tensor(float(VGG_GAIN))}
    with torch.no_grad():
        for k, c in enumerate(model.chns):
            name = f"lin{k}.model.1.weight"
            w = torch.from_numpy(np.abs(synthetic(name, (1, c, 1, 1))))
            getattr(model, f"lin{k}").model[1].weight.copy_(w)
            out[f"lin{k}.weight"] = w

    x0 = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    x1 = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()

    # Per-tap RMS of the VGG features (the gain check).
    rms = []
    with torch.no_grad():
        h = model.scaling_layer(x0)
        for i, m in enumerate(ref_feats):
            h = m(h)
            if i in VGG_TAPS:
                rms.append(float(h.pow(2).mean().sqrt()))
    print("lpips VGG tap RMS (gain %.4f):" % VGG_GAIN, " ".join(f"{r:.3g}" for r in rms))

    taps = {}
    hooks = [getattr(model, f"lin{k}").model.register_forward_hook(
        lambda m, i, o, k=k: taps.__setitem__(k, o.mean([2, 3]).flatten()))
        for k in range(5)]
    value = model(x0, x1, reduction="mean")
    value.backward()
    for hk in hooks:
        hk.remove()
    with torch.no_grad():
        per_sample = model(x0, x1, reduction="none").flatten()
    out.update(x0=x0, x1=x1, value=value, per_sample=per_sample, dx0=x0.grad, dx1=x1.grad)
    for k in range(5):
        out[f"tap{k}"] = taps[k]
    assert torch.allclose(sum(taps.values()), per_sample, atol=1e-6)
    print("lpips value %.6g per_sample %s taps %s" % (
        value.item(), per_sample.tolist(), [f"{taps[k].mean():.3g}" for k in range(5)]))

    x1r = x1.detach().clone().requires_grad_()
    r = real(x0.detach(), x1r)
    rv = r.mean()
    rv.backward()
    # Cross-check: the reference LPIPS with the v0.1 heads computes the same thing.
    v01 = copy.deepcopy(model)
    v01.load_state_dict(torch.load(os.path.join(os.path.dirname(lp.__file__), "weights",
                                                "v0.1", "vgg.pth"), map_location="cpu"),
                        strict=False)
    with torch.no_grad():
        ref_r = v01(x0, x1, reduction="none").flatten()
    assert torch.allclose(ref_r, r.detach().flatten(), rtol=1e-5, atol=1e-7), (ref_r, r)
    out["real.value"] = rv
    out["real.per_sample"] = r.flatten()
    out["real.dx1"] = x1r.grad
    print("lpips v0.1 value %.6g per_sample %s" % (rv.item(), r.flatten().tolist()))
    save(det(out), path)

    wpath = os.path.join(os.path.dirname(lp.__file__), "weights", "v0.1", "vgg.pth")
    import hashlib
    with open(wpath, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    print(f"lpips package vgg.pth: {wpath} md5 {md5}")
    for k, v in torch.load(wpath, map_location="cpu").items():
        print(f"    {k} {tuple(v.shape)} {v.dtype} min {v.min():.4g} max {v.max():.4g}")


# ---------------------------------------------------------------------------------------------
# gan_disc

TINY = {"depth": 4, "key_depths": (0, 2), "norm_eps": 1e-6, "patch_size": 8, "in_chans": 3,
        "embed_dim": 32, "num_heads": 2, "mlp_ratio": 4.0}


def dino_checkpoint(gen):
    C, P, depth, hidden = 32, 8, 4, 128

    def rn(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    sd = {
        "cls_token": rn(1, 1, C, scale=0.5),
        "pos_embed": rn(1, (224 // P) ** 2 + 1, C, scale=0.3),
        "patch_embed.proj.weight": rn(C, 3, P, P, scale=1 / math.sqrt(3 * P * P)),
        "patch_embed.proj.bias": rn(C, scale=0.1),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({
            b + "norm1.weight": 1 + rn(C, scale=0.1),
            b + "norm1.bias": rn(C, scale=0.05),
            b + "attn.qkv.weight": rn(3 * C, C, scale=1.5 / math.sqrt(C)),
            b + "attn.qkv.bias": rn(3 * C, scale=0.2),
            b + "attn.proj.weight": rn(C, C, scale=1 / math.sqrt(C)),
            b + "attn.proj.bias": rn(C, scale=0.05),
            b + "norm2.weight": 1 + rn(C, scale=0.1),
            b + "norm2.bias": rn(C, scale=0.05),
            b + "mlp.fc1.weight": rn(hidden, C, scale=1 / math.sqrt(C)),
            b + "mlp.fc1.bias": rn(hidden, scale=0.05),
            b + "mlp.fc2.weight": rn(C, hidden, scale=1 / math.sqrt(hidden)),
            b + "mlp.fc2.bias": rn(C, scale=0.05),
        })
    sd["norm.weight"] = 1 + rn(C, scale=0.1)
    sd["norm.bias"] = rn(C, scale=0.05)
    return sd


def make_disc(path, ref):
    import disc.dinodisc as dd

    dd.recipes["tiny"] = dict(TINY)
    gen = torch.Generator().manual_seed(20250103)
    ckpt = dino_checkpoint(gen)
    torch.manual_seed(20250104)
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "dino_tiny.pth")
        torch.save({k: v.clone() for k, v in ckpt.items()}, p)
        model = dd.DinoDisc(device=torch.device("cpu"), dino_ckpt_path=p, ks=9,
                            key_depths=(0, 2), norm_type="bn", using_spec_norm=True,
                            norm_eps=1e-6, recipe="tiny")
    dino = model.dino_proxy[0]
    # The constructor zeroed the key bias and nothing else.
    for k, v in dino.state_dict().items():
        if k in ("x_scale", "x_shift"):
            continue
        if k.endswith("attn.qkv.bias"):
            exp = ckpt[k].clone()
            exp[32:64] = 0
            assert torch.equal(v, exp), k
        else:
            assert torch.equal(v, ckpt[k]), k
    with torch.no_grad():
        for name, p_ in model.heads.named_parameters():
            if name.endswith("weight_orig"):
                p_.add_(0.5 * p_.std() * torch.randn_like(p_))
            elif name.endswith("bias"):
                p_.add_(0.2 * torch.randn_like(p_))
            else:  # BN weight
                p_.add_(0.2 * torch.randn_like(p_))
        # Warm the u/v buffers with SN_WARMUP power iterations (what earlier training steps
        # would have done): with SpectralNorm.apply's random u, v, u^T W v is ~0 or even
        # negative (-0.003 seen), which would scale eval-mode weights by up to -300.
        for m in model.heads.modules():
            if isinstance(m, dd.SpectralConv1d):
                W = m.weight_orig.reshape(m.weight_orig.shape[0], -1)
                for _ in range(SN_WARMUP):
                    m.weight_v.copy_(F.normalize(W.t() @ m.weight_u, dim=0, eps=1e-12))
                    m.weight_u.copy_(F.normalize(W @ m.weight_v, dim=0, eps=1e-12))
                # then nudge v off the fixed point, so that the one-row final conv (which one
                # iteration converges exactly) still differs between eval and train mode.
                nudge = torch.randn_like(m.weight_v) * (0.3 / math.sqrt(m.weight_v.numel()))
                m.weight_v.copy_(F.normalize(m.weight_v + nudge, dim=0, eps=1e-12))
                est = torch.dot(m.weight_u, W @ m.weight_v)
                assert est > 0.8 * torch.linalg.matrix_norm(W, 2)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert all(k.startswith("heads.") for k in state)
    train_model = copy.deepcopy(model)

    out = {f"dino.{k}": v for k, v in ckpt.items()}
    out.update(state)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out["x"] = x

    model.eval()
    with torch.no_grad():
        acts = dino(x)
    for k, a in enumerate(acts):
        out[f"act{k}"] = a
        print(f"disc act{k} {tuple(a.shape)} rms {a.pow(2).mean().sqrt():.3f}")
    xe = x.clone().requires_grad_()
    logits = model(xe)
    g = torch.randn_like(logits)
    (logits * g).sum().backward()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"eval forward changed {k}"
    out["eval.logits"], out["eval.g"], out["eval.dx"] = logits, g, xe.grad
    print(f"disc eval logits {tuple(logits.shape)} mean {logits.mean():.4f} std {logits.std():.4f}")

    train_model.train()
    xt = x.clone().requires_grad_()
    logits_t = train_model(xt)
    gt = torch.randn_like(logits_t)
    (logits_t * gt).sum().backward()
    out["train.logits"], out["train.g"], out["train.dx"] = logits_t, gt, xt.grad
    n_sn = 0
    for name, m in train_model.named_modules():
        if isinstance(m, dd.SpectralConv1d):
            n_sn += 1
            out[f"train.u.{name}"] = m.weight_u
            out[f"train.v.{name}"] = m.weight_v
            # A 1-row weight (the final 32 -> 1 conv) converges in one iteration (u = +-1,
            # v = W / |W|): there the update is a no-op up to rounding.
            if m.weight_orig.shape[0] > 1:
                dv = (m.weight_v - state[f"{name}.weight_v"]).norm()
                assert dv > 1e-3, (name, dv)
    for name, p_ in train_model.named_parameters():
        assert p_.grad is not None, name
        out[f"train.grad.{name}"] = p_.grad
    print(f"disc train logits mean {logits_t.mean():.4f}; {n_sn} spectral convs; "
          f"|train - eval logits| max {(logits_t - logits).abs().max():.3g}")
    save(det(out), path)


# ---------------------------------------------------------------------------------------------
# gan_diffaug

RAND = [[0.02, 0.97],   # translation h: floor(r*5) - 2 = -2, +2
        [0.75, 0.02],   # translation w: +1, -2
        [0.30, 0.80],   # brightness: + (r - 0.5)
        [0.35, 0.90],   # saturation factor 2r
        [0.60, 0.15],   # contrast factor r + 0.5
        [0.10, 0.95],   # cutout offset h: floor(r*16) = 1, 15
        [0.50, 0.00]]   # cutout offset w: 8, 0


def torch_with_rand(fn, batch):
    """A stand-in for the `torch` module of `disc.diffaug` with its randomness controlled:
    every attribute is torch's except `rand`, where `rand(3)` gives zeros (translation, colour
    and cutout all on) and `rand(7, batch, 1, 1)` gives a clone of `fn((7, batch, 1, 1))`."""

    class TorchProxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def rand(*shape, **kwargs):
            if tuple(shape) == (3,):
                return torch.zeros(3)
            assert tuple(shape) == (7, batch, 1, 1), shape
            return fn((7, batch, 1, 1)).clone()

    return TorchProxy("torch_proxy")


def make_diffaug(path, ref):
    import disc.diffaug as da

    torch.manual_seed(20250105)
    x = torch.randn(2, 3, 16, 16)
    rand = torch.tensor(RAND, dtype=torch.float32)
    B = x.shape[0]

    out = {"x": x, "rand": rand}
    orig = da.torch
    da.torch = torch_with_rand(lambda shape: rand.reshape(shape), B)
    try:
        for prefix, cutout in (("", 0.0), ("cut.", 0.2)):
            xi = x.clone().requires_grad_()
            y = da.DiffAug(prob=1.0, cutout=cutout).aug(xi)
            if not prefix:
                g = torch.randn_like(y)
                out["g"] = g
            (y * out["g"]).sum().backward()
            out[prefix + "y"] = y
            out[prefix + "dx"] = xi.grad
            print(f"diffaug{prefix and ' cut'}: zeros in y {(y == 0).sum().item()}, "
                  f"y std {y.std():.4f}")
    finally:
        da.torch = orig
    save(det(out), path)


# ---------------------------------------------------------------------------------------------
# gan_losses


def load_adaptive_weight(ref):
    """`calculate_adaptive_weight` from src/train_stage1.py, extracted with `ast` (the module
    itself imports omegaconf, diffusers, ... at top level)."""
    src_path = os.path.join(ref, "src", "train_stage1.py")
    with open(src_path) as f:
        tree = ast.parse(f.read())
    fn = next(n for n in tree.body
              if isinstance(n, ast.FunctionDef) and n.name == "calculate_adaptive_weight")
    mod = ast.Module(body=[fn], type_ignores=[])
    ns = {"torch": torch}
    exec(compile(mod, src_path, "exec"), ns)
    return ns["calculate_adaptive_weight"]


def make_losses(path, ref):
    from disc.gan_loss import hinge_d_loss, vanilla_d_loss, vanilla_g_loss

    torch.manual_seed(20250106)
    out = {}
    lr = (torch.randn(2, 10) * 1.5).requires_grad_()
    lf = (torch.randn(2, 10) * 1.5).requires_grad_()
    out["logits_real"], out["logits_fake"] = lr, lf
    h = hinge_d_loss(lr, lf)
    dr, dfk = torch.autograd.grad(h, (lr, lf))
    out["hinge_d"], out["hinge_d.dreal"], out["hinge_d.dfake"] = h, dr, dfk
    out["vanilla_d"] = vanilla_d_loss(lr, lf)
    gl = vanilla_g_loss(lf)
    out["vanilla_g"], out["vanilla_g.dfake"] = gl, torch.autograd.grad(gl, lf)[0]

    adaptive = load_adaptive_weight(ref)
    W = nn.Parameter(torch.randn(3, 4) * 0.5)
    v, t, c = torch.randn(5, 4), torch.randn(5, 3), torch.randn(3)
    p = v @ W.t()
    recon = (p - t).abs().mean()
    gan = -(p @ c).mean()
    lam = adaptive(recon, gan, W)
    total = recon + 0.75 * lam * gan
    dW = torch.autograd.grad(total, W)[0]
    out.update(W=W, v=v, t=t, c=c, recon=recon, gan=gan, **{"lambda": lam}, dW=dW)
    print(f"losses: hinge {h:.4f} vanilla_d {out['vanilla_d']:.4f} g {gl:.4f} "
          f"lambda {lam:.5f}")
    save(det(out), path)


# ---------------------------------------------------------------------------------------------
# gan_step

TINY_VGG_CFG = [4, 4, "M", 8, 8, "M", 8, 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M"]
TINY_VGG_CHNS = [4, 8, 8, 16, 16]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISC_WEIGHT = 0.75
PERCEPTUAL_WEIGHT = 1.0
MAX_D_WEIGHT = 1e4


def _trans_rand(pairs, colour):
    """A [7,2] DiffAug uniform table whose translations (delta 32 at 256 px:
    floor(r*65) - 32) are the given (h, w) per sample: r = (t + 32.5) / 65 rounded to 4
    digits (r*65 stays >= 0.49 away from an integer in float32)."""
    (h0, h1), (w0, w1) = pairs
    rows = [[round((t + 32.5) / 65, 4) for t in (h0, h1)],
            [round((t + 32.5) / 65, 4) for t in (w0, w1)]] + colour
    return torch.tensor(rows, dtype=torch.float32)


STEP_RAND = {
    # translations h (sample 0, 1), w (sample 0, 1); then brightness, saturation, contrast,
    # cutout offsets (unused: cutout 0 gives an empty window).
    "gen.rand": (((-20, 13), (7, -29)),
                 [[0.30, 0.80], [0.35, 0.90], [0.60, 0.15], [0.10, 0.95], [0.50, 0.00]]),
    "disc.rand_fake": (((25, -3), (-11, 17)),
                       [[0.70, 0.25], [0.20, 0.65], [0.85, 0.40], [0.30, 0.60], [0.90, 0.20]]),
    "disc.rand_real": (((-8, 30), (2, -16)),
                       [[0.45, 0.05], [0.75, 0.40], [0.30, 0.95], [0.55, 0.15], [0.05, 0.70]]),
}


class patched_tiny_vgg16:
    """torchvision.models.vgg16 -> an object whose `features` is a VGG-16-layout Sequential
    (same indices) with TINY_VGG_CFG channels and the synthetic (gained) weights."""

    def __enter__(self):
        import torchvision
        from torchvision.models.vgg import make_layers

        self.tv = torchvision.models
        self.orig = self.tv.vgg16

        def fake(*args, **kwargs):
            feats = make_layers(TINY_VGG_CFG, batch_norm=False)
            state = {}
            for k, t in feats.state_dict().items():
                v = synthetic("features." + k, tuple(t.shape))
                if k.endswith("weight"):
                    v = (v * VGG_GAIN).astype(np.float32)
                state[k] = torch.from_numpy(v)
            feats.load_state_dict(state)
            return types.SimpleNamespace(features=feats)

        self.tv.vgg16 = fake
        return self

    def __exit__(self, *exc):
        self.tv.vgg16 = self.orig


def make_step(path, ref):
    """One generator step and one discriminator step of src/train_stage1.py."""
    import json

    import disc.dinodisc as dd
    import disc.diffaug as da
    import disc.lpips as rl
    from disc.discriminator import DinoDiscriminator
    from disc.gan_loss import hinge_d_loss, vanilla_g_loss
    from safetensors.torch import load_file

    # The `stage1` package's __init__ imports every encoder; only the decoder is needed.
    pkg = types.ModuleType("stage1")
    pkg.__path__ = [os.path.join(ref, "src", "stage1")]
    sys.modules.setdefault("stage1", pkg)
    from stage1.decoders.decoder import GeneralDecoder
    from stage1.decoders.utils import ViTMAEConfig

    # The decoder comes from the committed fixtures; gan_disc.safetensors from this run's
    # output folder (written just before).
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    out_dir = os.path.dirname(path)
    torch.manual_seed(20250107)
    out = {}

    # --- decoder (as train_stage1: decoder.train(), requires_grad_(True) on ALL of it, which
    # makes the "frozen" sin-cos decoder_pos_embed trainable too).
    with open(os.path.join(fixtures, "decoder_config.json")) as f:
        cfg = ViTMAEConfig(**json.load(f))
    dec_state = load_file(os.path.join(fixtures, "decoder.safetensors"))
    decoder = GeneralDecoder(cfg, num_patches=256)
    decoder.load_state_dict(dec_state, strict=True)
    decoder.train()
    decoder.requires_grad_(True)
    params = dict(decoder.named_parameters())
    assert set(params) == set(dec_state), set(params) ^ set(dec_state)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def decode(z):  # RAE.decode without latent normalisation, tokens already [B, N, C]
        logits = decoder(z, drop_cls_token=False).logits
        return decoder.unpatchify(logits) * std + mean

    gen = torch.Generator().manual_seed(20250108)
    tokens = torch.randn(2, 256, 32, generator=gen)
    u = (hashes("gan_step.x", 2 * 3 * 256 * 256) >> np.uint64(40)).astype(np.float32)
    x = torch.from_numpy((u * np.float32(2.0**-24)).reshape(2, 3, 256, 256))
    out.update(tokens=tokens, image_mean=mean.flatten(), image_std=std.flatten())

    # --- LPIPS with the tiny VGG; heads replaced by tiny ones (use_dropout=True as default).
    orig_load = rl.LPIPS._load_pretrained_weights
    rl.LPIPS._load_pretrained_weights = lambda self, name="vgg_lpips": None
    try:
        with patched_tiny_vgg16():
            lpips = rl.LPIPS()
    finally:
        rl.LPIPS._load_pretrained_weights = orig_load
    lpips.chns = list(TINY_VGG_CHNS)
    for k, c in enumerate(TINY_VGG_CHNS):
        lin = rl.NetLinLayer(c, use_dropout=True)
        with torch.no_grad():
            w = torch.from_numpy(np.abs(synthetic(f"lin{k}.model.1.weight", (1, c, 1, 1))))
            lin.model[1].weight.copy_(w)
        setattr(lpips, f"lin{k}", lin)
        out[f"lin{k}.weight"] = w
    for p_ in lpips.parameters():
        p_.requires_grad = False
    lpips.eval()  # train_stage1: lpips.eval() (the heads' Dropout is then a no-op)
    feats = [m for s in (lpips.net.slice1, lpips.net.slice2, lpips.net.slice3,
                         lpips.net.slice4, lpips.net.slice5) for m in s]
    assert len(feats) == 30 and all(isinstance(feats[i], nn.Conv2d) for i in VGG_CONVS)
    assert [feats[i].out_channels for i in (2, 7, 14, 21, 28)] == TINY_VGG_CHNS

    # --- discriminator: gan_disc.safetensors' DINO checkpoint and heads state.
    dd.recipes["tiny"] = dict(TINY)
    gd = load_file(os.path.join(out_dir, "gan_disc.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "dino_tiny.pth")
        torch.save({k[5:]: v.clone() for k, v in gd.items() if k.startswith("dino.")}, p)
        disc = DinoDiscriminator(device=torch.device("cpu"), dino_ckpt_path=p, ks=9,
                                 key_depths=(0, 2), norm_type="bn", using_spec_norm=True,
                                 norm_eps=1e-6, recipe="tiny")
    heads_state = {k: v for k, v in gd.items() if k.startswith("heads.")}
    disc.load_state_dict(heads_state, strict=True)
    for k, v in disc.state_dict().items():
        assert torch.equal(v, heads_state[k]), k
    disc_train = copy.deepcopy(disc)  # the fresh copy for the discriminator step
    disc.eval()
    with torch.no_grad():
        assert torch.allclose(disc.classify(gd["x"]), gd["eval.logits"], atol=1e-5)

    # --- DiffAug with controlled uniforms (consumed in order).
    rands = {k: _trans_rand(*v) for k, v in STEP_RAND.items()}
    out.update(rands)
    queue = []

    aug = da.DiffAug(prob=1.0, cutout=0.0)
    orig_torch = da.torch
    da.torch = torch_with_rand(lambda shape: queue.pop(0).reshape(shape), 2)
    try:
        # ---------------- generator step (train_stage1 lines ~376-410)
        queue[:] = [rands["gen.rand"]]
        real_normed = x * 2.0 - 1.0
        disc.eval()
        x_hat = decode(tokens)
        x_hat.retain_grad()
        recon_normed = x_hat * 2.0 - 1.0
        rec_loss = (x_hat - x).abs().mean()
        lpips_loss = lpips(real_normed, recon_normed)
        recon_total = rec_loss + PERCEPTUAL_WEIGHT * lpips_loss
        fake_aug = aug.aug(recon_normed)
        logits_fake_g, _ = disc(fake_aug, None)
        gan_loss = vanilla_g_loss(logits_fake_g)
        lam = load_adaptive_weight(ref)(recon_total, gan_loss, decoder.decoder_pred.weight,
                                        MAX_D_WEIGHT)
        total = recon_total + DISC_WEIGHT * lam * gan_loss
        total.backward()
        assert not queue
        for k, v in disc.state_dict().items():
            assert torch.equal(v, heads_state[k]), f"eval forward changed {k}"
        out.update({"gen.l1": rec_loss, "gen.lpips": lpips_loss, "gen.gan": gan_loss,
                    "gen.lambda": lam, "gen.total": total,
                    "gen.logits_fake": logits_fake_g,
                    "gen.xhat_sum": x_hat.detach().sum((2, 3)),
                    "gen.dxhat_sum": x_hat.grad.sum((2, 3))})
        for name, p_ in decoder.named_parameters():
            assert p_.grad is not None, name
            out[f"gen.grad.{name}"] = p_.grad
        assert 1e-3 < lam.item() < 0.5 * MAX_D_WEIGHT, lam

        # ---------------- discriminator step (lines ~423-445), same decoder weights
        queue[:] = [rands["disc.rand_fake"], rands["disc.rand_real"]]
        decoder.eval()
        disc_train.train()
        with torch.no_grad():
            recon_disc = decode(tokens)
            recon_disc_normed = recon_disc * 2.0 - 1.0
        same = torch.equal(recon_disc, x_hat.detach())
        fake = recon_disc_normed.clamp(-1.0, 1.0)
        fake = torch.round((fake + 1.0) * 127.5) / 127.5 - 1.0
        fake_input = aug.aug(fake)
        real_input = aug.aug(real_normed)
        assert not queue
        logits_fake, logits_real = disc_train(fake_input, real_input)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        accuracy = (logits_real > logits_fake).float().mean()
        d_loss.backward()
    finally:
        da.torch = orig_torch
    out.update({"disc.loss": d_loss, "disc.accuracy": accuracy,
                "disc.logits_fake": logits_fake, "disc.logits_real": logits_real,
                "disc.fake_sum": fake.sum((2, 3))})
    n_grad = 0
    for name, p_ in disc_train.named_parameters():
        assert p_.grad is not None, name
        out[f"disc.grad.{name}"] = p_.grad
        n_grad += 1
    for name, m in disc_train.named_modules():
        if isinstance(m, dd.SpectralConv1d):
            out[f"disc.u.{name}"] = m.weight_u
            out[f"disc.v.{name}"] = m.weight_v

    clipped = ((recon_disc_normed < -1) | (recon_disc_normed > 1)).float().mean()
    print(f"step: x_hat mean {x_hat.mean():.4f} std {x_hat.std():.4f}, "
          f"fraction of 2x_hat-1 outside [-1,1] {clipped:.4f}; "
          f"disc-step recon == gen-step recon bitwise: {same}")
    for k in ("gen.l1", "gen.lpips", "gen.gan", "gen.lambda", "gen.total", "disc.loss",
              "disc.accuracy"):
        print(f"    {k} = {out[k].item():.9g}")
    print(f"    logits: gen fake mean {logits_fake_g.mean():.4f}; disc fake mean "
          f"{logits_fake.mean():.4f}, real mean {logits_real.mean():.4f}; {n_grad} head grads")
    save(det(out), path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", default="/tmp/RAE", help="checkout of the RAE repository")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.reference, "src"))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    out = os.path.abspath(args.out)
    make_ops(os.path.join(out, "gan_ops.safetensors"), args.reference)
    make_lpips(os.path.join(out, "gan_lpips.safetensors"), args.reference)
    make_disc(os.path.join(out, "gan_disc.safetensors"), args.reference)
    make_diffaug(os.path.join(out, "gan_diffaug.safetensors"), args.reference)
    make_losses(os.path.join(out, "gan_losses.safetensors"), args.reference)
    make_step(os.path.join(out, "gan_step.safetensors"), args.reference)
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
