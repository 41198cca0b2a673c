//! Deterministic synthetic weights, computed bit for bit like
//! `tools/fixture_synthetic.py`: a model too large to commit is filled with a
//! function of each parameter's name and element index on both sides.

use rae_core::nn::{HostTensor, HostTensors};
use rae_core::Result;

/// FNV-1a, 64 bit, over the UTF-8 bytes of `name`.
fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The values of the parameter `name` of shape `shape` (see the script's docstring).
pub fn synthetic(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let seed = fnv1a64(name);
    let scale = if shape.len() >= 2 {
        (1.0 / ((n / shape[0]) as f64).sqrt()) as f32
    } else {
        0.1f32
    };
    let norm_weight = shape.len() < 2 && name.ends_with("weight");
    (0..n as u64)
        .map(|i| {
            let z = mix(seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let u = (z >> 40) as f32 * (1.0 / 16_777_216.0);
            let s = 2.0f32 * u - 1.0;
            if norm_weight {
                1.0f32 + s * scale
            } else {
                s * scale
            }
        })
        .collect()
}

/// Every tensor of `like` (names and shapes) filled with [`synthetic`] values, except those
/// found in `frozen`, which are copied.
pub fn fill_like(like: &HostTensors, frozen: &HostTensors) -> Result<HostTensors> {
    let mut out = HostTensors::new();
    for (name, t) in like.iter() {
        let value = match frozen.get(name) {
            Some(f) => f.clone(),
            None => HostTensor::new(t.shape.clone(), synthetic(name, &t.shape))?,
        };
        out.insert(name, value);
    }
    Ok(out)
}

/// The raw 64-bit stream of [`synthetic`]: `splitmix64(fnv1a64(name) + (i + 1)·golden)`
/// for `i` in `0..n` (the `hashes` of `tools/make_inception_fixtures.py`).
pub fn hashes(name: &str, n: usize) -> impl Iterator<Item = u64> {
    let seed = fnv1a64(name);
    (0..n as u64).map(move |i| mix(seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))))
}

/// The `features.{i}.weight|bias` tensors of a VGG of layout `cfg` filled as
/// `tools/make_gan_fixtures.py` fills them: [`synthetic`] values, the weights times `gain`
/// (in f32; the fixtures use √6 so that the activations keep their scale through the ReLUs).
pub fn synthetic_vgg(cfg: &rae_core::gan::lpips::VggConfig, gain: f32) -> Result<HostTensors> {
    let mut out = HostTensors::new();
    let mut c = 3;
    for (blk, ids) in cfg.blocks.iter().zip(cfg.feature_indices()) {
        for (&o, i) in blk.iter().zip(ids) {
            let (wn, bn) = (format!("features.{i}.weight"), format!("features.{i}.bias"));
            let w = synthetic(&wn, &[o, c, 3, 3])
                .iter()
                .map(|v| v * gain)
                .collect();
            out.insert(wn, HostTensor::new(vec![o, c, 3, 3], w)?);
            out.insert(bn.clone(), HostTensor::new(vec![o], synthetic(&bn, &[o]))?);
            c = o;
        }
    }
    Ok(out)
}
