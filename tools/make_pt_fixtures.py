#!/usr/bin/env python3
"""Write the PyTorch `.pt` fixtures that test `rae-cli`'s own `.pt` reader (rae-cli/src/pt.rs).

Run by hand (not in CI), from the repository root, in an environment with torch:

    python tools/make_pt_fixtures.py            # writes tests/fixtures/pt/

Every `NAME.pt` written by `torch.save` gets a `NAME.expected.json` computed here from the
torch tensors themselves, so the Rust tests compare against an independent truth:

    {"writer": "torch 2.x", "tensors": [{"name": "a.b", "dtype": "float32", "shape": [2, 3],
      "f32_bits": [...]} | {..., "i64": [...]}], "scalars": [{"name": "step", "int": 7}, ...],
     "checks": {...}}

`tensors` lists the tensors in the order a dotted-name flattening of the loaded value yields
them (dict order; nested dict keys joined with "."). Floating tensors are given as the bit
patterns of their float32 conversion (`t.float()`, exact for f16/bf16/f32), row-major.
`scalars` lists the non-tensor leaves the same way. Files the reader must refuse get
`{"error_contains": [...]}` instead.

Fixtures that torch itself does not write are marked "hand-built" below: the malicious
pickles (assembled opcode by opcode and never unpickled here), and repacks of a torch file
with Python's zipfile (a DEFLATE-compressed copy). The legacy-format files (`legacy*.pt`) are
torch's own `_use_new_zipfile_serialization=False` output; `python tools/make_pt_fixtures.py
legacy` rewrites only those (and their zip twins).
"""

import io
import json
import os
import struct
import sys
import zipfile

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pt")


def tensor_entry(name, t):
    t = t.detach()
    entry = {"name": name, "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
    if t.dtype.is_floating_point:
        bits = t.to(torch.float32).contiguous().reshape(-1).view(torch.int32)
        entry["f32_bits"] = [int(b) & 0xFFFFFFFF for b in bits.tolist()]
    else:
        entry["i64"] = [int(v) for v in t.to(torch.int64).reshape(-1).tolist()]
    return entry


def flatten(value, prefix, tensors, scalars):
    """Mirror of the Rust `flatten_tensors`: dicts by key, lists and tuples by index."""

    def join(key):
        return key if prefix == "" else f"{prefix}.{key}"

    if isinstance(value, torch.Tensor):
        tensors.append(tensor_entry(prefix, value))
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, join(str(k)), tensors, scalars)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flatten(v, join(str(i)), tensors, scalars)
    elif value is None:
        scalars.append({"name": prefix, "none": True})
    elif isinstance(value, bool):
        scalars.append({"name": prefix, "bool": value})
    elif isinstance(value, int):
        scalars.append({"name": prefix, "int": value})
    elif isinstance(value, float):
        scalars.append({"name": prefix, "float": value})
    elif isinstance(value, str):
        scalars.append({"name": prefix, "str": value})
    else:
        raise TypeError(f"no expected-value encoding for {type(value)} at {prefix}")


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def save(name, value, checks=None, **save_kwargs):
    path = os.path.join(OUT, name + ".pt")
    torch.save(value, path, **save_kwargs)
    # Sanity: torch reads back what it wrote. weights_only executes nothing, but torch's
    # restricted unpickler knows no FRAME opcode, so protocol-4 files (ours) load plainly.
    back = torch.load(path, weights_only=save_kwargs.get("pickle_protocol", 2) == 2)
    tensors, scalars = [], []
    flatten(value, "", tensors, scalars)
    tensors_back, scalars_back = [], []
    flatten(back, "", tensors_back, scalars_back)
    assert tensors == tensors_back and scalars == scalars_back, name
    expected = {"writer": f"torch {torch.__version__}", "tensors": tensors, "scalars": scalars}
    if checks:
        expected["checks"] = checks
    write_json(name + ".expected.json", expected)


def storage_ptr(t):
    return t.untyped_storage().data_ptr()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.register_buffer("pos_embed", torch.randn(1, 2, 4))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(20251207)

    # 1. Plain float32 state dict: a 0-d tensor, a transposed (non-contiguous) view saved as
    #    is, two overlapping views of one storage at non-zero offsets, a stride-0 expand, an
    #    empty tensor and values whose bits must survive (NaN, infinities, -0, subnormal).
    base = torch.arange(12, dtype=torch.float32) * 0.5 - 1.0
    transposed = torch.randn(3, 5).t()
    shared_a = base[2:8].view(2, 3)
    shared_b = base[6:].view(3, 2)
    expanded = torch.randn(3, 1).expand(3, 4)
    assert not transposed.is_contiguous() and transposed.stride() == (1, 5)
    assert storage_ptr(shared_a) == storage_ptr(shared_b) == storage_ptr(base)
    assert shared_a.storage_offset() == 2 and shared_b.storage_offset() == 6
    assert expanded.stride() == (1, 0)
    sd = {
        "linear.weight": torch.randn(4, 3),
        "linear.bias": torch.randn(4),
        "scalar": torch.tensor(3.25),
        "transposed": transposed,
        "shared_a": shared_a,
        "shared_b": shared_b,
        "expanded": expanded,
        "empty": torch.zeros(0, 3),
        "special": torch.tensor(
            [float("nan"), float("inf"), float("-inf"), -0.0, 1e-45, 3.4e38, -1.5]
        ),
    }
    save(
        "state_dict_f32",
        sd,
        checks={
            "transposed_stride": list(transposed.stride()),
            "shared_offsets": [shared_a.storage_offset(), shared_b.storage_offset()],
        },
    )

    # 2. Half and bfloat16 (and a transposed half view).
    h = torch.randn(2, 3).to(torch.float16)
    save(
        "half_bf16",
        {
            "half": h,
            "half_t": h.t(),
            "bf16": torch.randn(5).to(torch.bfloat16),
            "half_special": torch.tensor([65504.0, 6e-8, float("inf"), -0.0], dtype=torch.float16),
        },
    )

    # 3. int64 (kept as i64: extremes must survive).
    save(
        "int64",
        {
            "labels": torch.tensor([0, 1, -1, 999, 2**62, -(2**63), 2**63 - 1], dtype=torch.int64),
            "grid": torch.arange(6, dtype=torch.int64).view(2, 3).t(),
            "count": torch.tensor(42, dtype=torch.int64),
        },
    )

    # 4. A training checkpoint as the reference writes it: {"ema": sd, "model": sd, "step": 7}
    #    with real nn.Module state dicts (OrderedDict with `_metadata`, set through BUILD),
    #    plus plain Python values.
    ema, model = Tiny(), Tiny()
    save(
        "checkpoint_nested",
        {
            "ema": ema.state_dict(),
            "model": model.state_dict(),
            "step": 7,
            "config": {"name": "tiny", "lr": 1e-4, "use_ema": True, "extra": None, "dims": (2, 3)},
        },
    )

    # 5. Latent statistics like the released stat.pt (§2.4): {"mean": T, "var": T}.
    save("stat", {"mean": torch.randn(8, 2, 2), "var": torch.rand(8, 2, 2) + 0.1})

    # 6. The same state dict object referenced twice (memo sharing in the pickle), and
    #    nn.Parameter values (torch._utils._rebuild_parameter).
    shared_sd = Tiny().state_dict()
    save("memo_shared", {"first": shared_sd, "second": shared_sd})
    save("parameters", dict(Tiny().named_parameters()))

    # 7. Pickle protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL...).
    save("proto4", Tiny().state_dict(), pickle_protocol=4)

    # 8. Legacy (torch < 1.6) non-zip format: written by legacy(), below.

    # 9. Hand-built: a DEFLATE repack of a torch file (Python zipfile): refused clearly.
    src = zipfile.ZipFile(os.path.join(OUT, "stat.pt"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename.replace("stat/", "deflated/"), src.read(info.filename))
    with open(os.path.join(OUT, "deflated.pt"), "wb") as f:
        f.write(buf.getvalue())
    write_json("deflated.expected.json", {"error_contains": ["deflated/data.pkl", "deflate"]})

    # 10. Hand-built malicious pickles, in torch's zip layout. Assembled from opcodes and
    #     never loaded here. GLOBAL (protocol 2) calling os.system, and STACK_GLOBAL
    #     (protocol 4) calling builtins.eval.
    def short_or_long_str(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b

    evil_global = (
        b"\x80\x02"  # PROTO 2
        + b"cos\nsystem\n"  # GLOBAL os.system
        + short_or_long_str("echo pwned > /tmp/rae_pt_pwned")
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"."  # STOP
    )
    evil_stack_global = (
        b"\x80\x04"  # PROTO 4
        + b"\x8c\x08builtins"  # SHORT_BINUNICODE
        + b"\x8c\x04eval"
        + b"\x93"  # STACK_GLOBAL
        + b"\x8c\x081+1==2  "  # SHORT_BINUNICODE (8 bytes)
        + b"\x85R."
    )
    for name, pkl, culprit in [
        ("malicious", evil_global, "os.system"),
        ("malicious_stack_global", evil_stack_global, "builtins.eval"),
    ]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(f"{name}/data.pkl", pkl)
            z.writestr(f"{name}/byteorder", "little")
            z.writestr(f"{name}/version", "3\n")
        with open(os.path.join(OUT, name + ".pt"), "wb") as f:
            f.write(buf.getvalue())
        write_json(name + ".expected.json", {"error_contains": [culprit]})

    legacy()
    return report()


class FidLike(nn.Module):
    """A few layers named like pytorch-fid's FIDInceptionA block (conv + BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = nn.Sequential()
        self.Conv2d_1a_3x3.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.Conv2d_1a_3x3.bn = nn.BatchNorm2d(4, eps=0.001)
        self.fc = nn.Linear(4, 3)


def legacy():
    """The legacy (`_use_new_zipfile_serialization=False`, torch < 1.6 default) files: the
    magic-number, protocol-version and sys_info pickles, the object pickle, the storage-key
    pickle, then each storage as an int64 element count and its raw little-endian bytes.
    Each `legacy_*` file that has a `legacy_*_zip` twin holds the same value saved as a zip."""
    torch.manual_seed(20251208)
    legacy_kw = {"_use_new_zipfile_serialization": False}
    save("legacy", {"w": torch.ones(2)}, **legacy_kw)

    # A state dict of float32 / float16 / int64 tensors: views of one storage at offsets,
    # a transposed (non-contiguous) tensor, a stride-0 expand, a 0-d and an empty tensor.
    base = torch.randn(20)
    halves = torch.randn(4, 3).to(torch.float16)
    ints = torch.tensor([5, -7, 2**40, -(2**63), 2**63 - 1, 0], dtype=torch.int64)
    mixed = {
        "f32.full": base,
        "f32.offset_view": base[5:11].view(2, 3),
        "f32.tail": base[14:],
        "f32.transposed": torch.randn(3, 4).t(),
        "f32.expanded": torch.randn(2, 1).expand(2, 3),
        "f32.scalar": torch.tensor(-2.5),
        "f32.empty": torch.zeros(0, 4),
        "f16.full": halves,
        "f16.transposed_view": halves[1:].t(),
        "i64.values": ints,
        "i64.strided": ints[1::2],
        "i64.count": torch.tensor(12345, dtype=torch.int64),
    }
    assert mixed["f32.offset_view"].storage_offset() == 5
    assert not mixed["f16.transposed_view"].is_contiguous()
    save("legacy_mixed", mixed, **legacy_kw)
    save("legacy_mixed_zip", mixed)
    # The same with pickle protocol 4 (every pickle FRAMEd, the magic number too).
    save("legacy_proto4", mixed, pickle_protocol=4, **legacy_kw)

    # An nn.Module state dict (OrderedDict with `_metadata`, BatchNorm's int64
    # num_batches_tracked), like pytorch-fid's pt_inception weights.
    fid = FidLike()
    with torch.no_grad():
        for buf in fid.buffers():
            if buf.dtype.is_floating_point:
                buf.copy_(torch.rand_like(buf) + 0.5)
    fid_sd = fid.state_dict()
    save("legacy_fid_like", fid_sd, **legacy_kw)
    save("legacy_fid_like_zip", fid_sd)

    # A nested training checkpoint.
    ema, model = Tiny(), Tiny()
    ckpt = {
        "ema": ema.state_dict(),
        "model": model.state_dict(),
        "step": 11,
        "config": {"name": "legacy", "lr": 3e-4, "flags": (True, None)},
    }
    save("legacy_checkpoint", ckpt, **legacy_kw)
    save("legacy_checkpoint_zip", ckpt)


def report():
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"torch {torch.__version__}: wrote {len(os.listdir(OUT))} files, {total} bytes to {OUT}")
    assert total < 200_000, total
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["legacy"]:
        # Only the legacy files (and their zip twins): the others are left as they are.
        os.makedirs(OUT, exist_ok=True)
        legacy()
        sys.exit(report())
    sys.exit(main())
