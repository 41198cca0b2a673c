#!/usr/bin/env python3
"""Write the PyTorch checkpoint used by the `--config` end-to-end test
(`rae-cli/tests/config.rs`): the tiny DiT-DH of `tests/fixtures/dit.safetensors`
(`tests/fixtures/dit_config.json`) saved by `torch.save` in the layout of the reference's
training checkpoints (`src/train.py`):

    {"step": int, "epoch": int, "model": state_dict, "ema": state_dict,
     "optimizer": AdamW state_dict, "scheduler": LambdaLR state_dict}

`ema` holds the fixture's weights exactly; `model` holds the same weights plus noise, so a
reader that took `model` instead of `ema` would sample different latents. `optimizer` is the
state after one real AdamW step over the `model` weights.

Run by hand (not in CI), from the repository root, in an environment with torch and
safetensors:

    python tools/make_config_fixtures.py        # writes tests/fixtures/dit_train_ckpt.pt
"""

import os

import torch
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def main():
    ema = load_file(os.path.join(ROOT, "dit.safetensors"))
    g = torch.Generator().manual_seed(77)
    model = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in ema.items()}
    params = [torch.nn.Parameter(v.clone()) for v in model.values()]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = {
        "step": 1,
        "epoch": 0,
        "model": model,
        "ema": ema,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
    }
    path = os.path.join(ROOT, "dit_train_ckpt.pt")
    torch.save(state, path)
    os.chmod(path, 0o644)
    print("torch", torch.__version__, "wrote", os.path.abspath(path))


if __name__ == "__main__":
    main()
