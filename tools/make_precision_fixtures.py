#!/usr/bin/env python3
"""Write the fixture of `tests/tests/precision.rs` (spec §7.5): the reference DiT-DH-S
(`src/stage2/models/DDT.py`, `DiTwDDTHead` with the DiT-DH-S constructor arguments: backbone
384 wide, 12 blocks, 6 heads; head 2048 wide, 2 blocks, 16 heads; 16x16 latents of 768
channels, 1000 classes) run on the CPU in float32 and under PyTorch's bfloat16 autocast.

The model has about 170 M parameters, too many to commit. Every trainable parameter is
therefore filled with a deterministic function of its name and element index that the Rust
test computes bit for bit (`tests/src/synthetic.rs`):

    seed  = FNV-1a 64 of the parameter name (UTF-8)
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)   (wrapping, 64 bit)
    u_i   = (z_i >> 40) * 2^-24                                (exact in float32)
    s_i   = 2 u_i - 1                                          (exact, in [-1, 1))
    value = s_i * float32(1 / sqrt(numel / shape[0]))          if the tensor has >= 2 dims
          = 1 + s_i * float32(0.1)   (float32 ops, in order)   if 1-D and named *weight
          = s_i * float32(0.1)                                 otherwise (1-D biases)

The frozen tensors (`t_embedder.W`, `pos_embed`, RoPE tables) are saved as the reference
computed them, under `frozen.NAME`. Also saved: inputs `x` [2,768,16,16] (standard normal,
torch seed 0), `t` [2], `y` [2] (int64; the second is the null class 1000) and the outputs
`v_fp32` and `v_bf16` (autocast's bfloat16 result converted to float32).

Run by hand (not in CI), from the repository root, with torch, timm, einops, numpy and
safetensors installed and a checkout of the reference (github.com/bytetriper/RAE):

    python tools/make_precision_fixtures.py /path/to/RAE   # writes tests/fixtures/precision_dit_s.safetensors
"""

import os
import sys
import types

import torch
from safetensors.torch import save_file

from fixture_synthetic import synthetic

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def main():
    ref = sys.argv[1] if len(sys.argv) > 1 else "RAE"
    sys.path.insert(0, os.path.join(ref, "src"))
    # DDT.py imports two names it never uses (`regex.B`, `transformers.SwinModel`).
    sys.modules.setdefault("regex", types.SimpleNamespace(B=None))
    sys.modules.setdefault("transformers", types.SimpleNamespace(SwinModel=None))
    from stage2.models.DDT import DiTwDDTHead

    torch.manual_seed(0)
    model = DiTwDDTHead(
        input_size=16,
        patch_size=1,
        in_channels=768,
        hidden_size=[384, 2048],
        depth=[12, 2],
        num_heads=[6, 16],
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
    ).eval()

    out = {}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name in trainable:
                t.copy_(torch.from_numpy(synthetic(name, tuple(t.shape))))
            else:
                out["frozen." + name] = t.detach().clone().contiguous()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 768, 16, 16, generator=g)
    t = torch.tensor([0.3, 0.8])
    y = torch.tensor([3, 1000], dtype=torch.int64)
    with torch.no_grad():
        v32 = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v16 = model(x, t, y)
    out.update(x=x, t=t, y=y, v_fp32=v32.contiguous(), v_bf16=v16.float().contiguous())
    rel = ((v16.float() - v32).norm() / v32.norm()).item()
    path = os.path.join(ROOT, "precision_dit_s.safetensors")
    save_file(out, path)
    os.chmod(path, 0o644)
    print("torch", torch.__version__, "wrote", os.path.abspath(path))
    print(f"trainable tensors {len(trainable)}, |v| rms {v32.pow(2).mean().sqrt():.4f}, "
          f"bf16 autocast rel-L2 error {rel:.3e}")


if __name__ == "__main__":
    main()
