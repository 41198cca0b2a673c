#!/usr/bin/env python3
"""Write the parity fixtures of the SigLIP and MAE encoders (§2.3) with HuggingFace
`transformers` (the reference pins 4.56.2), as the reference RAE wraps them
(`src/stage1/encoders/{siglip2,mae}.py`, `src/stage1/rae.py`).

Run by hand (not in CI), from the repository root, in an environment with torch and
transformers==4.56.2:

    python tools/make_encoder_fixtures.py        # writes tests/fixtures/{siglip,mae,siglip2}*

Every model is tiny and random; every parameter except MAE's fixed sin-cos position table is
perturbed with Gaussian noise after construction so all paths carry non-trivial values.

* `siglip/`: `SiglipModel.save_pretrained` (full config with `vision_config`, tensors under
  `vision_model.` and `text_model.`) plus its image-processor config. Vision tower: width 32,
  2 layers, 2 heads, MLP 64, GELU-tanh, patch 4, image size 32 (an 8×8 position table).
  `siglip_io.safetensors`: `images` [2,3,36,36] (k/255 values); `tokens` [2,64,32] = the RAE
  encode path at input 32 (bicubic resize without antialias, mean = std = 0.5, the vision
  tower with `interpolate_pos_encoding=True`, `post_layernorm` without affine); `tokens_i40`
  [2,100,32] the same at input 40 (the 8×8 table is bicubic-resized to 10×10).
* `mae/`: `ViTMAEForPreTraining.save_pretrained` (tensors under `vit.` and `decoder.`) plus its
  image-processor config. Encoder: width 32, 2 layers, 2 heads, MLP 64, exact GELU, LayerNorm
  eps 1e-12, patch 4, image size 28 (a 7×7 sin-cos table + CLS row). `mae_io.safetensors`:
  `images` [2,3,36,36]; `tokens` [2,64,32] = the RAE encode path at input 32 (ImageNet
  mean/std, mask ratio 0 with the identity shuffle `noise = arange(N)`, the table resized
  7×7 → 8×8, final LayerNorm without affine, CLS dropped).
* `siglip2/`: a NaFlex `Siglip2VisionModel` (linear patch embedding over channel-last patches,
  `num_patches` 64, width 32, 2 layers). `siglip2_io.safetensors`: `pixels` [2,3,32,32]
  (already standardised) and `tokens` [2,64,32] with `post_layernorm` without affine.
"""

import json
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import (
    SiglipConfig,
    SiglipModel,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def processor_config(folder, processor, mean, std, size):
    """The `image_mean`/`image_std` part of a `preprocessor_config.json` (the processors
    themselves need PIL, which this script does not)."""
    cfg = {"image_processor_type": processor, "image_mean": mean, "image_std": std,
           "size": {"height": size, "width": size}}
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def save_io(tensors, name):
    path = os.path.join(ROOT, name)
    save_file(tensors, path)
    os.chmod(path, 0o644)


def readable(folder):
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)


def perturb(model, skip=()):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in skip):
                continue
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def images(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, 3, 36, 36), generator=g).float() / 255.0


def rae_input(x, size, mean, std):
    """`RAE.encode` before the encoder: non-antialiased bicubic resize, then standardise."""
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def drop_affine(ln):
    """What the reference wrappers do to the final LayerNorm."""
    ln.elementwise_affine = False
    ln.weight = None
    ln.bias = None


def siglip():
    torch.manual_seed(0)
    cfg = SiglipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=4,
            image_size=32,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        text_config=dict(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
        ),
    )
    cfg._attn_implementation = "eager"
    model = SiglipModel(cfg).eval()
    perturb(model)
    out = os.path.join(ROOT, "siglip")
    model.save_pretrained(out, safe_serialization=True)
    processor_config(out, "SiglipImageProcessor", [0.5] * 3, [0.5] * 3, 32)
    readable(out)
    vision = model.vision_model
    drop_affine(vision.post_layernorm)
    x = images(1)
    io = {"images": x.contiguous()}
    with torch.no_grad():
        for key, size in [("tokens", 32), ("tokens_i40", 40)]:
            pix = rae_input(x, size, [0.5] * 3, [0.5] * 3)
            io[key] = vision(pix, interpolate_pos_encoding=True).last_hidden_state.contiguous()
    save_io(io, "siglip_io.safetensors")


def mae():
    torch.manual_seed(0)
    cfg = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        image_size=28,
        patch_size=4,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        mask_ratio=0.75,
    )
    cfg._attn_implementation = "eager"
    model = ViTMAEForPreTraining(cfg).eval()
    perturb(model, skip=("position_embeddings", "decoder_pos_embed"))
    out = os.path.join(ROOT, "mae")
    model.save_pretrained(out, safe_serialization=True)
    processor_config(out, "ViTImageProcessor", IMAGENET_MEAN, IMAGENET_STD, 224)
    readable(out)
    vit = model.vit
    drop_affine(vit.layernorm)
    vit.config.mask_ratio = 0.0
    x = images(2)
    with torch.no_grad():
        pix = rae_input(x, 32, IMAGENET_MEAN, IMAGENET_STD)
        n = (32 // 4) ** 2
        noise = torch.arange(n).unsqueeze(0).expand(pix.shape[0], -1).to(pix.dtype)
        tokens = vit(pix, noise, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
    save_io({"images": x.contiguous(), "tokens": tokens.contiguous()}, "mae_io.safetensors")


def siglip2():
    torch.manual_seed(0)
    cfg = Siglip2VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=4,
        num_patches=64,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )
    cfg._attn_implementation = "eager"
    model = Siglip2VisionModel(cfg).eval()
    perturb(model)
    out = os.path.join(ROOT, "siglip2")
    model.save_pretrained(out, safe_serialization=True)
    readable(out)
    vm = model.vision_model
    drop_affine(vm.post_layernorm)
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    p, gr = 4, 8
    # The Siglip2 image processor's patch order: (row, column) patches, each flattened as
    # (row-in-patch, column-in-patch, channel).
    patches = pixels.reshape(2, 3, gr, p, gr, p).permute(0, 2, 4, 3, 5, 1).reshape(2, gr * gr, p * p * 3)
    mask = torch.ones(2, gr * gr, dtype=torch.long)
    shapes = torch.tensor([[gr, gr], [gr, gr]])
    with torch.no_grad():
        tokens = vm(patches, mask, shapes).last_hidden_state
    save_io({"pixels": pixels.contiguous(), "tokens": tokens.contiguous()}, "siglip2_io.safetensors")


if __name__ == "__main__":
    print("torch", torch.__version__, "transformers", transformers.__version__)
    siglip()
    mae()
    siglip2()
    print("wrote fixtures under", os.path.abspath(ROOT))
