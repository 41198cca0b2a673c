//! Philox4x32-10 counter-based random numbers, addressed by `(seed, stream, position)`, so
//! every backend produces the same values for the same address.
//!
//! # The exact mapping (a GPU kernel implements the same)
//!
//! * **Key** `k = (seed as u32, (seed >> 32) as u32)`.
//! * **Counter** for element position `pos` (= `offset + i` for element `i` of a fill):
//!   `block = pos / 4`, `lane = pos % 4`,
//!   `c = (block as u32, (block >> 32) as u32, stream as u32, (stream >> 32) as u32)`.
//! * **Bits**: `x = philox4x32_10(c, k)[lane]` — ten rounds of Salmon et al. (2011) with
//!   multipliers `0xD2511F53`, `0xCD9E8D57` and key increments `0x9E3779B9`, `0xBB67AE85`.
//! * **Uniform** `(0, 1)`: `u(x) = (2·(x >> 9) + 1) · 2⁻²⁴`. Every step is exact in f32 (an
//!   odd integer below 2²⁴ times a power of two), so the value is bit-identical everywhere;
//!   it is never 0 or 1.
//! * **Normal** (Box–Muller on the lane pair): lanes 0 and 1 of a block form one pair, lanes 2
//!   and 3 the other. For lane `l`, with `x_a = x[l & !1]`, `x_b = x[l | 1]`:
//!   `r = sqrt(−2·ln u(x_a))`, `θ = 2π·u(x_b)`, value `r·cos θ` for even `l`, `r·sin θ` for odd
//!   `l`. `ln`, `cos` and `sin` are the f32 polynomial forms in this module ([`ln_f32`],
//!   [`sincos_2pi_bits`]), built from exact bit and integer manipulation plus `+ − × ÷ sqrt`
//!   so a GPU reproduces them bit for bit (as long as its compiler does not fuse a
//!   multiply-add, which the WGSL path on lavapipe does not do).

/// A Philox key: the seed and the stream (an independent sequence per use: initial
/// noise, label dropout, time draws, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PhiloxKey {
    /// The user's seed.
    pub seed: u64,
    /// The stream number.
    pub stream: u64,
}

impl PhiloxKey {
    /// A key from seed and stream.
    pub const fn new(seed: u64, stream: u64) -> Self {
        PhiloxKey { seed, stream }
    }
}

/// Philox multiplier for counter word 0.
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox multiplier for counter word 2.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Key increment for key word 0 (golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Key increment for key word 1 (sqrt 3 − 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with ten rounds on counter `c` and key `k`.
pub fn philox4x32_10(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let mut c = c;
    let mut k = k;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four words of block `block` of `key`.
pub fn block_bits(key: PhiloxKey, block: u64) -> [u32; 4] {
    let c = [
        block as u32,
        (block >> 32) as u32,
        key.stream as u32,
        (key.stream >> 32) as u32,
    ];
    let k = [key.seed as u32, (key.seed >> 32) as u32];
    philox4x32_10(c, k)
}

/// The uniform `(0, 1)` value of 32 random bits: `(2·(x >> 9) + 1)·2⁻²⁴`.
#[inline]
pub fn uniform_from_bits(x: u32) -> f32 {
    ((x >> 9) * 2 + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Natural logarithm of a positive, normal f32 by exponent extraction and the
/// `2·atanh(s)` series on a mantissa in `[√½, √2)`. Accurate to a few ulp.
pub fn ln_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > core::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 2.0 / 9.0;
    let p = p * s2 + 2.0 / 7.0;
    let p = p * s2 + 2.0 / 5.0;
    let p = p * s2 + 2.0 / 3.0;
    let p = p * s2 + 2.0;
    (e as f32) * core::f32::consts::LN_2 + p * s
}

/// `(sin θ, cos θ)` for `θ = 2π·u(x)` with `u` the uniform of [`uniform_from_bits`]. The
/// quadrant and the reflection about π/4 are taken from the integer `2·(x >> 9) + 1`, so
/// only a polynomial on `[0, π/4]` is evaluated in floating point.
pub fn sincos_2pi_bits(x: u32) -> (f32, f32) {
    // u = odd / 2^24, 4u = odd / 2^22: quadrant = odd >> 22, fraction = (odd & (2^22-1))/2^22.
    let odd = (x >> 9) * 2 + 1;
    let quadrant = odd >> 22;
    let mut num = odd & 0x003f_ffff;
    let reflect = num > 0x0020_0000;
    if reflect {
        num = 0x0040_0000 - num;
    }
    let phi = (num as f32) * (1.0 / 4_194_304.0) * core::f32::consts::FRAC_PI_2;
    let p2 = phi * phi;
    let s = 1.0 / 362_880.0;
    let s = s * p2 - 1.0 / 5040.0;
    let s = s * p2 + 1.0 / 120.0;
    let s = s * p2 - 1.0 / 6.0;
    let s = s * p2 + 1.0;
    let sin_phi = s * phi;
    let c = -1.0 / 3_628_800.0;
    let c = c * p2 + 1.0 / 40_320.0;
    let c = c * p2 - 1.0 / 720.0;
    let c = c * p2 + 1.0 / 24.0;
    let c = c * p2 - 0.5;
    let cos_phi = c * p2 + 1.0;
    // Angle inside the quadrant: psi = phi, or pi/2 - phi when reflected.
    let (sin_psi, cos_psi) = if reflect {
        (cos_phi, sin_phi)
    } else {
        (sin_phi, cos_phi)
    };
    match quadrant {
        0 => (sin_psi, cos_psi),
        1 => (cos_psi, -sin_psi),
        2 => (-sin_psi, -cos_psi),
        _ => (-cos_psi, sin_psi),
    }
}

/// The standard-normal value of lane `lane` of a block (Box–Muller on the lane pair).
#[inline]
pub fn normal_from_block(bits: [u32; 4], lane: usize) -> f32 {
    let a = bits[lane & !1];
    let b = bits[lane | 1];
    let r = libm::sqrtf(-2.0 * ln_f32(uniform_from_bits(a)));
    let (s, c) = sincos_2pi_bits(b);
    if lane & 1 == 0 {
        r * c
    } else {
        r * s
    }
}

/// Fills `out` with the uniforms at positions `offset ..` of `key`.
pub fn fill_uniform(out: &mut [f32], key: PhiloxKey, offset: u64) {
    fill_with(out, key, offset, |bits, lane| uniform_from_bits(bits[lane]));
}

/// Fills `out` with the normals at positions `offset ..` of `key`.
pub fn fill_normal(out: &mut [f32], key: PhiloxKey, offset: u64) {
    fill_with(out, key, offset, normal_from_block);
}

fn fill_with(out: &mut [f32], key: PhiloxKey, offset: u64, f: impl Fn([u32; 4], usize) -> f32) {
    let mut cached_block = u64::MAX;
    let mut bits = [0u32; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let pos = offset.wrapping_add(i as u64);
        let block = pos / 4;
        if block != cached_block {
            bits = block_bits(key, block);
            cached_block = block;
        }
        *o = f(bits, (pos % 4) as usize);
    }
}

/// A host-side cursor over one Philox stream: successive draws continue where the previous
/// ones stopped, and the position can be saved and restored (checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhiloxStream {
    /// The key.
    pub key: PhiloxKey,
    /// The next position.
    pub position: u64,
}

impl PhiloxStream {
    /// A cursor at position 0.
    pub const fn new(seed: u64, stream: u64) -> Self {
        PhiloxStream {
            key: PhiloxKey::new(seed, stream),
            position: 0,
        }
    }

    /// Reserves `n` positions and returns the first (for a device fill).
    pub fn advance(&mut self, n: u64) -> u64 {
        let p = self.position;
        self.position = self.position.wrapping_add(n);
        p
    }

    /// The next uniform.
    pub fn uniform(&mut self) -> f32 {
        let mut v = [0.0];
        let p = self.advance(1);
        fill_uniform(&mut v, self.key, p);
        v[0]
    }

    /// The next normal.
    pub fn normal(&mut self) -> f32 {
        let mut v = [0.0];
        let p = self.advance(1);
        fill_normal(&mut v, self.key, p);
        v[0]
    }

    /// Fills `out` with the next uniforms.
    pub fn uniforms(&mut self, out: &mut [f32]) {
        let p = self.advance(out.len() as u64);
        fill_uniform(out, self.key, p);
    }

    /// Fills `out` with the next normals.
    pub fn normals(&mut self, out: &mut [f32]) {
        let p = self.advance(out.len() as u64);
        fill_normal(out, self.key, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        // Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10).
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn ln_and_sincos_are_accurate() {
        let mut worst_ln = 0.0f64;
        let mut worst_trig = 0.0f64;
        for i in 0..200_000u32 {
            let x = i.wrapping_mul(2_654_435_761);
            let u = uniform_from_bits(x);
            let l = ln_f32(u) as f64;
            worst_ln = worst_ln.max((l - (u as f64).ln()).abs() / (u as f64).ln().abs().max(1.0));
            let (s, c) = sincos_2pi_bits(x);
            let th = 2.0 * core::f64::consts::PI * u as f64;
            worst_trig =
                worst_trig.max((s as f64 - th.sin()).abs().max((c as f64 - th.cos()).abs()));
        }
        assert!(worst_ln < 1e-6, "ln error {worst_ln}");
        assert!(worst_trig < 1e-6, "sincos error {worst_trig}");
    }
}
