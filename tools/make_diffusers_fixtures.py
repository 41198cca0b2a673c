#!/usr/bin/env python3
"""Write the fixtures of the diffusers `AutoencoderRAE` import and export (diffusers 0.42.1,
torch 2.15 CPU, fp32).

Run by hand (not in CI), from the repository root, with a Python that has diffusers,
transformers and torch:

    python tools/make_diffusers_fixtures.py made      # (a) tests/fixtures/diffusers_rae{,_io}
    python tools/make_diffusers_fixtures.py exported  # (b) tests/fixtures/rae_exported_diffusers_io
    python tools/make_diffusers_fixtures.py siglip2 mae                # (c)
    python tools/make_diffusers_fixtures.py exported-siglip2 DIR       # (d)
    python tools/make_diffusers_fixtures.py exported-mae DIR           # (d)

(a) `made`: a small random `AutoencoderRAE` (DINOv2-with-registers encoder: width 64, so one
    head of 64 as diffusers fixes the head width; 1 layer, patch 14, the 37×37 position table
    of image size 518; encoder input 56, a 4×4 latent grid; decoder width 32, 1 layer, 2 heads,
    MLP 64, patch 16, 64×64 output; `latents_mean`/`latents_std` of shape [64,4,4]). Every
    parameter is perturbed with Gaussian noise so that no path is trivial. Saved with
    `save_pretrained` into `tests/fixtures/diffusers_rae/`. `diffusers_rae_io.safetensors`:
    `images` [2,3,64,64] (k/255 values), `latents` = `encode(images).latent` [2,64,4,4] (eval
    mode: no noise), `z` [2,64,4,4] random latents and `decoded` = `decode(z).sample`
    [2,3,64,64].

(b) `exported`: loads `tests/fixtures/rae_exported_diffusers/` (written by our
    `rae-cli export --diffusers` from a tiny RAE built by our code: see
    `rae-cli/tests/diffusers.rs`, `remake_exported_fixture`) with
    `AutoencoderRAE.from_pretrained` and writes `rae_exported_diffusers_io.safetensors`: the
    same kind of `images`, `latents`, `z`, `decoded` as (a).

(c) `siglip2`, `mae`: small random `AutoencoderRAE`s with `encoder_type` "siglip2" / "mae"
    (encoder width 64, one head, 1 layer, patch 16, the MLP width 3072 that diffusers leaves
    at transformers' default; encoder input 64, so the 16×16 SigLIP table of image size 256 and
    the 14×14 MAE table of image size 224 are both resized to 4×4; decoder width 32, 1 layer,
    2 heads, MLP 64, patch 8, 32×32 output; SigLIP2 with mean = std = 0.5), perturbed like (a),
    saved with `save_pretrained` into `tests/fixtures/diffusers_rae_{siglip2,mae}/`, reloaded,
    and recorded in `diffusers_rae_{siglip2,mae}_io.safetensors` (images [2,3,48,48]).

    diffusers 0.42.1 cannot build its SigLIP2 encoder under transformers 5: it reaches for
    `SiglipVisionModel.vision_model`, which transformers 5 flattened away. The script gives it
    transformers 4's layout (the tower under `vision_model.`, see `SiglipT4Layout`), which is
    also the layout of the released `...-siglip2-...` checkpoints; the modules themselves are
    transformers 5's. MAE builds as is (transformers 5 names: `layers.{i}.attention.q_proj`).

(d) `exported-siglip2 DIR`, `exported-mae DIR`: DIR written by
    `rae-cli export --diffusers DIR --rae tests/fixtures/diffusers_rae_{siglip2,mae}`; loads it
    with `AutoencoderRAE.from_pretrained`, runs it on the `images`/`z` of (c) and writes
    `diffusers_rae_{siglip2,mae}_exported_io.safetensors` (`latents`, `decoded`).
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import transformers
from diffusers import AutoencoderRAE
from diffusers.models.autoencoders import autoencoder_rae


class SiglipT4Layout(nn.Module):
    """transformers 4's `SiglipVisionModel` layout (the tower under `vision_model.`) around
    transformers 5's flattened model, so that diffusers 0.42.1 can build its SigLIP2 encoder."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_model = transformers.SiglipVisionModel(config)

    def forward(self, pixel_values, **kwargs):
        return self.vision_model(pixel_values, **kwargs)


autoencoder_rae.SiglipVisionModel = SiglipT4Layout

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def images(gen, n=2, side=64):
    """Values k/255, so PNG files could carry them exactly."""
    return torch.randint(0, 256, (n, 3, side, side), generator=gen).float() / 255.0


def record(model, gen, path, side=64):
    model.eval()
    x = images(gen, side=side)
    with torch.no_grad():
        lat = model.encode(x).latent
        z = torch.randn(lat.shape, generator=gen)
        dec = model.decode(z).sample
    save_file(
        {"images": x, "latents": lat.contiguous(), "z": z, "decoded": dec.contiguous()},
        path,
    )
    print(f"wrote {path}: latents {tuple(lat.shape)}, decoded {tuple(dec.shape)}")


def made():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    c, g = 64, 4
    mean = 0.5 * torch.randn(c, g, g, generator=gen)
    std = 0.5 + torch.rand(c, g, g, generator=gen)
    model = AutoencoderRAE(
        encoder_type="dinov2",
        encoder_hidden_size=c,
        encoder_patch_size=14,
        encoder_num_hidden_layers=1,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        patch_size=16,
        encoder_input_size=56,
        latents_mean=mean,
        latents_std=std,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    out = os.path.join(ROOT, "diffusers_rae")
    model.save_pretrained(out)
    print(f"wrote {out}")
    # Reload as a user would, so the outputs are those of the saved folder.
    model = AutoencoderRAE.from_pretrained(out)
    record(model, gen, os.path.join(ROOT, "diffusers_rae_io.safetensors"))


def exported():
    folder = os.path.join(ROOT, "rae_exported_diffusers")
    model = AutoencoderRAE.from_pretrained(folder)
    gen = torch.Generator().manual_seed(2)
    record(model, gen, os.path.join(ROOT, "rae_exported_diffusers_io.safetensors"))


def made_other(kind):
    torch.manual_seed(10)
    gen = torch.Generator().manual_seed(11)
    c, g = 64, 4
    mean = 0.5 * torch.randn(c, g, g, generator=gen)
    std = 0.5 + torch.rand(c, g, g, generator=gen)
    extra = {"encoder_norm_mean": [0.5] * 3, "encoder_norm_std": [0.5] * 3} if kind == "siglip2" else {}
    model = AutoencoderRAE(
        encoder_type=kind,
        encoder_hidden_size=c,
        encoder_patch_size=16,
        encoder_num_hidden_layers=1,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        patch_size=8,
        encoder_input_size=64,
        latents_mean=mean,
        latents_std=std,
        **extra,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    out = os.path.join(ROOT, f"diffusers_rae_{kind}")
    model.save_pretrained(out)
    print(f"wrote {out}")
    model = AutoencoderRAE.from_pretrained(out)
    record(model, gen, os.path.join(ROOT, f"diffusers_rae_{kind}_io.safetensors"), side=48)


def exported_other(kind, folder):
    model = AutoencoderRAE.from_pretrained(folder).eval()
    t = load_file(os.path.join(ROOT, f"diffusers_rae_{kind}_io.safetensors"))
    with torch.no_grad():
        lat = model.encode(t["images"]).latent
        dec = model.decode(t["z"]).sample
    el = (lat - t["latents"]).abs().max().item()
    ed = (dec - t["decoded"]).abs().max().item()
    print(f"{kind}: exported vs diffusers-made folder: latents {el:.3e}, decoded {ed:.3e}")
    path = os.path.join(ROOT, f"diffusers_rae_{kind}_exported_io.safetensors")
    save_file({"latents": lat.contiguous(), "decoded": dec.contiguous()}, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    what = sys.argv[1:] or ["made", "exported", "siglip2", "mae"]
    if what[0].startswith("exported-"):
        exported_other(what[0][len("exported-") :], what[1])
        sys.exit(0)
    for w in what:
        {
            "made": made,
            "exported": exported,
            "siglip2": lambda: made_other("siglip2"),
            "mae": lambda: made_other("mae"),
        }[w]()
