"""Deterministic synthetic tensors shared by the fixture generators in tools/.

Every value is a function of a tensor's name and element index only, so a fixture can stand
in for a model too large to commit: the generator fills the parameters with these values and
the Rust test rebuilds them. `tests/src/synthetic.rs` mirrors these functions bit for bit;
change neither without the other (and regenerating the fixtures).

* `fnv1a64(name)`: FNV-1a 64 of the name's UTF-8 bytes.
* `hashes(name, n)`: z_i = splitmix64(fnv1a64(name) + (i + 1) * 0x9E3779B97F4A7C15) for
  i in 0..n, all arithmetic wrapping at 64 bits (uint64 [n]).
* `synthetic(name, shape)`: float32 of `shape`, row-major over the element index:

      u_i   = (z_i >> 40) * 2^-24                                (exact in float32)
      s_i   = 2 u_i - 1                                          (exact, in [-1, 1))
      value = s_i * float32(1 / sqrt(numel / shape[0]))          if the tensor has >= 2 dims
            = 1 + s_i * float32(0.1)   (float32 ops, in order)   if 1-D and named *weight
            = s_i * float32(0.1)                                 otherwise (1-D biases)
"""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(name: str) -> np.uint64:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(h)


def hashes(name: str, n: int) -> np.ndarray:
    """splitmix64(fnv1a64(name) + (i + 1) * golden) for i in 0..n (wrapping)."""
    with np.errstate(over="ignore"):
        z = fnv1a64(name) + (np.arange(1, n + 1, dtype=np.uint64) * GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def synthetic(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape))
    u = (hashes(name, n) >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    s = np.float32(2.0) * u - np.float32(1.0)
    if len(shape) >= 2:
        v = s * np.float32(1.0 / np.sqrt(n / shape[0]))
    elif name.endswith("weight"):
        v = np.float32(1.0) + s * np.float32(0.1)
    else:
        v = s * np.float32(0.1)
    return v.astype(np.float32).reshape(shape)
