#!/usr/bin/env python3
"""The reference's side of `cargo bench -p rae-core --bench vs_reference`.

The bench starts this script (when `RAE_REF_PYTHON` names a Python with torch, timm and
transformers, and `RAE_REF_SRC` the reference repository, github.com/bytetriper/RAE) so both
sides run in one command, on the same machine, with the same thread count. It can also be
run by hand:

    python tools/vs_reference.py --ref /path/to/RAE --threads 2 --iters 3

Every case builds the reference's own module with random weights, runs it once untimed, then
`--iters` timed times, and prints one JSON line: the case name, the batch, the median seconds
and the FLOPs of one run (counted by `torch.utils.flop_counter.FlopCounterMode`: matrix
products, attention and convolutions, 2 per multiply-add). Cases:

* `dit_s_fwd`: `DiTwDDTHead` with the DiT-DH-S arguments (§3.9) in eval mode, 16×16×768
  latents, under `torch.no_grad()`.
* `dit_s_step`: one stage-2 training step of the same model: flow-matching interpolation at
  logit-normal times, forward in train mode, MSE to the velocity, backward,
  `clip_grad_norm_(1.0)`, AdamW (betas 0.9/0.95, no weight decay) and an EMA update.
* `dinov2_b_fwd`: HF `Dinov2WithRegistersModel` with the `facebook/dinov2-with-registers-base`
  configuration on 224×224 images, under `torch.no_grad()`.
* `dit_xl_fwd`: `DiTwDDTHead` with the DiT-DH-XL arguments.
* `decoder_xl_fwd`: the reference's `GeneralDecoder` with `configs/decoder/ViTXL` on 256
  tokens of width 768 (patch 16, 256² output), logits and unpatchify.
"""

import argparse
import json
import os
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def dit_dh(size):
    from stage2.models.DDT import DiTwDDTHead

    enc, depth, heads = {"S": (384, 12, 6), "XL": (1152, 28, 16)}[size]
    return DiTwDDTHead(
        input_size=16,
        patch_size=1,
        in_channels=768,
        hidden_size=[enc, 2048],
        depth=[depth, 2],
        num_heads=[heads, 16],
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
    )


def dit_inputs(batch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 768, 16, 16, generator=g)
    t = (torch.arange(batch, dtype=torch.float32) + 0.5) / batch
    y = torch.tensor([i * 7 % 1000 for i in range(batch)])
    return x, t, y


def dit_forward(size, batch):
    model = dit_dh(size).eval()
    x, t, y = dit_inputs(batch)

    def run():
        with torch.no_grad():
            model(x, t, y)

    return run


def dit_step(size, batch):
    model = dit_dh(size).train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    z, _, y = dit_inputs(batch)
    shift = (768 * 16 * 16 / 4096) ** 0.5

    def run():
        t = torch.sigmoid(torch.randn(batch))
        t = shift * t / (1 + (shift - 1) * t)
        eps = torch.randn_like(z)
        tt = t.view(-1, 1, 1, 1)
        xt = (1 - tt) * z + tt * eps
        pred = model(xt, t, y)
        loss = F.mse_loss(pred, eps - z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.9999)

    return run


def dinov2_forward(batch):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    cfg = Dinov2WithRegistersConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        num_register_tokens=4,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
    )
    model = Dinov2WithRegistersModel(cfg).eval()
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(2))

    def run():
        with torch.no_grad():
            model(pixel_values=x)

    return run


def decoder_forward(ref, batch):
    from transformers import ViTMAEConfig

    # The `stage1` package's __init__ imports every encoder; only the decoder is needed.
    pkg = types.ModuleType("stage1")
    pkg.__path__ = [os.path.join(ref, "src", "stage1")]
    sys.modules.setdefault("stage1", pkg)
    from stage1.decoders.decoder import GeneralDecoder

    with open(os.path.join(ref, "configs", "decoder", "ViTXL", "config.json")) as f:
        raw = json.load(f)
    cfg = ViTMAEConfig(**{k: v for k, v in raw.items() if k != "patch_size"})
    cfg.hidden_size, cfg.patch_size, cfg.image_size = 768, 16, 256
    model = GeneralDecoder(cfg, num_patches=256).eval()
    z = torch.randn(batch, 256, 768, generator=torch.Generator().manual_seed(3))

    def run():
        with torch.no_grad():
            logits = model(z, drop_cls_token=False).logits
            model.unpatchify(logits)

    return run


CASES = {
    "dit_s_fwd": (4, lambda ref, b: dit_forward("S", b)),
    "dit_s_step": (4, lambda ref, b: dit_step("S", b)),
    "dinov2_b_fwd": (4, lambda ref, b: dinov2_forward(b)),
    "dit_xl_fwd": (1, lambda ref, b: dit_forward("XL", b)),
    "decoder_xl_fwd": (1, lambda ref, b: decoder_forward(ref, b)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the reference repository (bytetriper/RAE)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, os.path.join(args.ref, "src"))
    # DDT.py imports two names it never uses (`regex.B`, `transformers.SwinModel`).
    try:
        import regex  # noqa: F401
    except ImportError:
        sys.modules["regex"] = types.SimpleNamespace(B=None)

    for name in args.cases.split(","):
        batch, build = CASES[name]
        run = build(args.ref, batch)
        with FlopCounterMode(display=False) as counter:
            run()
        flops = counter.get_total_flops()
        times = []
        for _ in range(max(args.iters, 1)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        line = {
            "case": name,
            "batch": batch,
            "secs": statistics.median(times),
            "flops": flops,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
