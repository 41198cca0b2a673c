#!/usr/bin/env python3
"""Write the fixture of `rae-cli/tests/pil_crop.rs`: the ADM centre crop (spec §5.2,
guided-diffusion's `center_crop_arr`) computed by Pillow, for `rae_cli::image_io::adm_center_crop`
to reproduce byte for byte.

The crop, as the reference runs it on an RGB `PIL.Image`:

    while min(*im.size) >= 2 * s:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = s / min(*im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    arr = np.array(im)
    y0, x0 = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
    out = arr[y0:y0 + s, x0:x0 + s]

The input images are not stored: each is a deterministic integer function of its kind,
size, seed and parameter that the Rust test computes bit for bit (`generate` below; the
test checks the FNV-1a 64 hash of every generated input against the one recorded here):

    key(x, y, c) = (seed << 44) | (y << 22) | (x << 2) | c
    z            = splitmix64 finaliser of key * 0x9E3779B97F4A7C15   (wrapping, 64 bit)
    noise byte   = z >> 56

    noise    every byte is a noise byte
    checker  cells of `param` pixels: (cx + cy) even -> PALETTE[(cx + 3 cy) % 6],
             odd -> black if cy is even, else white
    edges    R = 255 if (x + 2y) % 37 < 18 else 0;  G = 255 inside the disc
             (2x+1-w)^2 + (2y+1-h)^2 <= (min(w,h) * param // 8)^2, else 0;
             B = x * 255 // max(w - 1, 1)
    photo    base (30 + 200x // w, 40 + 180y // h, 80 + 97(x+y) // (w+h)); (4, 2, 0) where
             x < w // 8; (250, 240, 20) in the box w//4 <= x < 3w//4, h//3 <= y < 2h//3;
             plus (noise byte % 17) - 8 per channel, clipped to 0..255
    lines    white; black where x % 5 == 0 or y % 7 == 0; red where (7x + 13y) % 29 == 0

Pillow 13 changed the order of the two passes of a resize (vertical first when the height
shrinks by more than twice as many pixels as the width does; Pillow 7 to 12 always run the
horizontal pass first), and the intermediate is rounded to 8 bits, so tall images crop
differently. Hence two files, by the Pillow that runs the script:

    Pillow 7-12  tests/fixtures/pil_crop.safetensors            (pass_order "classic")
    Pillow 13    tests/fixtures/pil_crop_pillow13.safetensors   (pass_order "pillow13")

Each holds U8 tensors `[H, W, 3]`:

    CASE.out       the crop (left out for the largest cases, which keep only its hash)
    CASE.halved    the image after the box halvings (when there were any and it is small)
    CASE.resized   the image after the bicubic resize, before the crop (when it is small)

and in the metadata `pillow_version`, `numpy_version`, `pass_order` and `cases`: one line per
case, `key=value` fields separated by spaces: id, kind, w, h, seed, param, s, halvings,
halved (WxH), resized (WxH), vfirst (how many of the case's resizes Pillow 13 runs
vertical pass first), input_fnv and out_fnv (FNV-1a 64 of the row-major RGB bytes, 16 hex
digits). The Pillow 13 file stores tensors only for the cases with vfirst > 0 (the others
are the same as in the first file); it has every case's hashes.

Run by hand (not in CI), from the repository root, with numpy and safetensors, once with a
Pillow from 7 to 12 and once with Pillow 13:

    pip install --target /tmp/pil12 "pillow<13"; pip install --target /tmp/pil "pillow>=13,<14" numpy safetensors
    PYTHONPATH=/tmp/pil12:/tmp/pil python tools/make_pil_fixtures.py
    PYTHONPATH=/tmp/pil python tools/make_pil_fixtures.py
"""

import os

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
# Intermediates up to this many bytes are stored.
SMALL = 4 * 1024
# Cases (w, h, s) whose crop is checked by its hash only, to keep the file small.
HASH_ONLY = {(300, 200, 256), (600, 515, 256), (1100, 1030, 256)}

# (kind, w, h, seed, param, crop sides)
CASES = [
    ("noise", 3, 5, 1, 0, [1, 2, 4, 16]),
    ("checker", 1, 1, 2, 1, [1, 3]),
    ("lines", 2, 7, 3, 0, [2, 5]),
    ("edges", 7, 7, 4, 6, [3, 7, 9]),
    ("photo", 13, 9, 5, 0, [4, 8, 16]),
    ("checker", 31, 17, 6, 3, [8, 16, 32]),
    ("edges", 33, 65, 7, 6, [16, 32]),
    ("noise", 45, 44, 8, 0, [16, 22, 32, 64]),
    ("checker", 32, 32, 9, 1, [15, 16]),
    ("lines", 31, 40, 10, 0, [16]),
    ("photo", 64, 70, 11, 0, [16, 24, 32]),
    ("edges", 63, 100, 12, 5, [16, 31]),
    ("noise", 127, 95, 13, 0, [16, 32, 47]),
    ("photo", 6, 4, 14, 0, [3]),  # 6 * 0.75 = 4.5: round half to even gives 4
    ("photo", 10, 4, 15, 0, [3]),  # 10 * 0.75 = 7.5 -> 8
    ("lines", 100, 10, 16, 0, [4, 8]),  # aspect ratio 10, the limit
    ("photo", 9, 90, 17, 0, [5]),
    ("noise", 50, 40, 18, 0, [32]),  # s = 32: no halving, bicubic down
    ("lines", 70, 64, 19, 0, [32]),  # one halving to 35x32, no resize
    ("photo", 100, 90, 20, 0, [32]),  # one halving to 50x45, bicubic down
    ("edges", 130, 140, 21, 4, [32]),  # two halvings to 32x35
    ("noise", 150, 200, 22, 0, [32]),  # two halvings to 37x50, bicubic down
    ("checker", 300, 200, 23, 7, [32, 64, 100, 256]),  # 256: bicubic up
    ("lines", 257, 1000, 24, 0, [32, 64, 100]),
    ("photo", 640, 427, 25, 0, [32, 64, 256]),  # 256: no halving, bicubic down
    ("edges", 600, 515, 26, 7, [32, 256]),  # 256: one halving, bicubic down
    ("checker", 1100, 1030, 27, 9, [32, 256]),  # 256: two halvings, bicubic down
    # Tall images, which Pillow 13 resizes vertical pass first.
    ("noise", 20, 90, 28, 0, [8, 12, 19]),
    ("edges", 40, 130, 29, 5, [16, 24]),
    ("photo", 30, 300, 30, 0, [16, 29]),
    ("lines", 64, 200, 31, 0, [32]),
    ("checker", 17, 60, 32, 2, [10]),
]


def mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def generate(kind, w, h, seed, param):
    """The input image, `[h, w, 3]` uint8."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    x, y, c = (a.astype(np.int64) for a in (x, y, c))
    with np.errstate(over="ignore"):
        key = (
            (np.uint64(seed) << np.uint64(44))
            | (y.astype(np.uint64) << np.uint64(22))
            | (x.astype(np.uint64) << np.uint64(2))
            | c.astype(np.uint64)
        )
        nb = (mix(key * GOLDEN) >> np.uint64(56)).astype(np.int64)
    if kind == "noise":
        v = nb
    elif kind == "checker":
        cx, cy = x // param, y // param
        pal = np.array(PALETTE, dtype=np.int64)[(cx + 3 * cy) % 6, c]
        other = np.where(cy % 2 == 0, 0, 255)
        v = np.where((cx + cy) % 2 == 0, pal, other)
    elif kind == "edges":
        r = min(w, h) * param // 8
        dx, dy = 2 * x + 1 - w, 2 * y + 1 - h
        red = np.where((x + 2 * y) % 37 < 18, 255, 0)
        green = np.where(dx * dx + dy * dy <= r * r, 255, 0)
        blue = x * 255 // max(w - 1, 1)
        v = np.where(c == 0, red, np.where(c == 1, green, blue))
    elif kind == "photo":
        base = np.where(
            c == 0, 30 + 200 * x // w, np.where(c == 1, 40 + 180 * y // h, 80 + 97 * (x + y) // (w + h))
        )
        dark = np.array([4, 2, 0], dtype=np.int64)[c]
        bright = np.array([250, 240, 20], dtype=np.int64)[c]
        base = np.where(x < w // 8, dark, base)
        inside = (w // 4 <= x) & (x < 3 * w // 4) & (h // 3 <= y) & (y < 2 * h // 3)
        base = np.where(inside, bright, base)
        v = np.clip(base + nb % 17 - 8, 0, 255)
    elif kind == "lines":
        v = np.full_like(x, 255)
        v = np.where((x % 5 == 0) | (y % 7 == 0), 0, v)
        v = np.where(((7 * x + 13 * y) % 29 == 0) & (c != 0), 0, v)
        v = np.where(((7 * x + 13 * y) % 29 == 0) & (c == 0), 255, v)
    else:
        raise ValueError(kind)
    return v.astype(np.uint8)


def fnv1a64(a):
    h = 0xCBF29CE484222325
    for b in np.ascontiguousarray(a).tobytes():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def vertical_first(old, new):
    """Whether Pillow 13 resizes `old` to `new` (both (w, h)) vertical pass first."""
    need_h, need_v = old[0] != new[0], old[1] != new[1]
    dw, dh = old[0] - new[0], old[1] - new[1]
    return need_h and need_v and dh > 0 and dh > 2 * dw


def center_crop_arr(pil_image, s):
    """guided-diffusion's crop; also returns the intermediates."""
    halvings, halved, vfirst = 0, None, 0
    while min(*pil_image.size) >= 2 * s:
        size = tuple(x // 2 for x in pil_image.size)
        vfirst += vertical_first(pil_image.size, size)
        pil_image = pil_image.resize(size, resample=Image.BOX)
        halvings += 1
        halved = np.array(pil_image)
    scale = s / min(*pil_image.size)
    size = tuple(round(x * scale) for x in pil_image.size)
    vfirst += vertical_first(pil_image.size, size)
    pil_image = pil_image.resize(size, resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - s) // 2
    crop_x = (arr.shape[1] - s) // 2
    return arr[crop_y : crop_y + s, crop_x : crop_x + s], halvings, halved, arr, vfirst


def main():
    pillow13 = int(PIL.__version__.split(".")[0]) >= 13
    tensors, lines = {}, []
    for i, (kind, w, h, seed, param, sizes) in enumerate(CASES):
        inp = generate(kind, w, h, seed, param)
        in_fnv = fnv1a64(inp)
        for s in sizes:
            out, halvings, halved, resized, vfirst = center_crop_arr(Image.fromarray(inp, "RGB"), s)
            assert out.shape == (s, s, 3), (kind, w, h, s, out.shape)
            cid = f"c{i:02d}_{kind}_{w}x{h}_s{s}"
            hv = halved if halved is not None else inp
            lines.append(
                f"id={cid} kind={kind} w={w} h={h} seed={seed} param={param} s={s} "
                f"halvings={halvings} halved={hv.shape[1]}x{hv.shape[0]} "
                f"resized={resized.shape[1]}x{resized.shape[0]} vfirst={vfirst} "
                f"input_fnv={in_fnv} out_fnv={fnv1a64(out)}"
            )
            if pillow13 and vfirst == 0:
                continue
            if (w, h, s) not in HASH_ONLY:
                tensors[cid + ".out"] = np.ascontiguousarray(out)
            if halved is not None and halved.nbytes <= SMALL:
                tensors[cid + ".halved"] = np.ascontiguousarray(halved)
            if resized.nbytes <= SMALL:
                tensors[cid + ".resized"] = np.ascontiguousarray(resized)
    meta = {
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "pass_order": "pillow13" if pillow13 else "classic",
        "cases": "\n".join(lines),
    }
    path = os.path.join(ROOT, "pil_crop_pillow13.safetensors" if pillow13 else "pil_crop.safetensors")
    save_file(tensors, path, metadata=meta)
    os.chmod(path, 0o644)
    stored = sum(1 for k in tensors if k.endswith(".out"))
    print("Pillow", PIL.__version__, "wrote", os.path.abspath(path), os.path.getsize(path), "bytes")
    print(f"{len(lines)} cases, {stored} with the crop stored, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
