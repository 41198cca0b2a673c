#!/usr/bin/env python3
"""Write `tests/fixtures/conv_io.safetensors`, the PyTorch side of `tests/tests/conv_parity.rs`:
`F.conv2d` (two geometries), `F.max_pool2d` and `F.avg_pool2d` with their outputs and
the gradients of `sum(out * g)` for a fixed random cotangent `g`, in float32 on the CPU.

    /tmp/tv/bin/python tools/make_conv_fixtures.py [OUT]

Tensors (all float32; `<case>.` prefixes):

    conv_a.  stride 2, padding (0, 3), 3x5 window, x [2,3,9,11], weight [4,3,3,5], bias [4]
    conv_b.  stride 1, padding (3, 0), 7x1 window, x [1,5,8,6],  weight [3,5,7,1], bias [3]
             each: x, weight, bias, y, g, dx, dweight, dbias
    maxpool. F.max_pool2d(x, 3, stride=2), x [2,3,9,10]: x, y, g, dx
    avgpool. F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x [2,3,7,6]: x, y, g, dx
"""

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20240614)
out = {}


def conv_case(name, x_shape, w_shape, stride, padding):
    x = torch.randn(*x_shape, requires_grad=True)
    w = (torch.randn(*w_shape) * 0.3).requires_grad_()
    b = torch.randn(w_shape[0], requires_grad=True)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    for k, v in dict(x=x, weight=w, bias=b, y=y, g=g, dx=x.grad, dweight=w.grad, dbias=b.grad).items():
        out[f"{name}.{k}"] = v.detach().contiguous()


def pool_case(name, x_shape, fn):
    x = torch.randn(*x_shape, requires_grad=True)
    y = fn(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    for k, v in dict(x=x, y=y, g=g, dx=x.grad).items():
        out[f"{name}.{k}"] = v.detach().contiguous()


conv_case("conv_a", (2, 3, 9, 11), (4, 3, 3, 5), (2, 2), (0, 3))
conv_case("conv_b", (1, 5, 8, 6), (3, 5, 7, 1), (1, 1), (3, 0))
pool_case("maxpool", (2, 3, 9, 10), lambda x: F.max_pool2d(x, 3, stride=2))
pool_case(
    "avgpool",
    (2, 3, 7, 6),
    lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
)

path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/conv_io.safetensors"
save_file(out, path, metadata={"torch": torch.__version__})
print(f"wrote {len(out)} tensors to {path} (torch {torch.__version__})")
