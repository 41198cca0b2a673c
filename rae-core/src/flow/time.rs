//! Training-time distributions before the shift (§4.2) and the standard normal CDF and its
//! inverse that the truncated logit-normal needs.
//!
//! Draws come from a host [`PhiloxStream`] (one position per draw), so a seed gives the same
//! times on every backend.

use alloc::format;
use alloc::string::ToString;

use crate::error::{Error, Result};
use crate::rng::PhiloxStream;

/// Lower end of the reference training interval (§4.2).
pub const REFERENCE_T0: f64 = 0.0;
/// Upper end of the reference training interval, `1 − 1/1000` (§4.2).
pub const REFERENCE_T1: f64 = 0.999;

/// The standard normal CDF `Φ(x) = ½·erfc(−x/√2)`, in f64.
///
/// Through `erfc`, so the lower tail keeps full relative precision (`Φ(−8) ≈ 6.2e−16`).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * core::f64::consts::FRAC_1_SQRT_2)
}

/// Evaluates `Σ c[i]·r^i` by Horner's rule.
fn poly(c: &[f64; 8], r: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * r + ci)
}

// Wichura (1988), Algorithm AS 241 (PPND16): rational approximations with about 1e-16
// relative accuracy. Numerators `A`, `C`, `E`; denominators `B`, `D`, `F` (leading 1).
const AS241_A: [f64; 8] = [
    3.387_132_872_796_366_608,
    1.331_416_678_917_843_774_5e2,
    1.971_590_950_306_551_442_7e3,
    1.373_169_376_550_946_112_5e4,
    4.592_195_393_154_987_145_7e4,
    6.726_577_092_700_870_085_3e4,
    3.343_057_558_358_812_810_5e4,
    2.509_080_928_730_122_672_7e3,
];
const AS241_B: [f64; 8] = [
    1.0,
    4.231_333_070_160_091_125_2e1,
    6.871_870_074_920_579_083e2,
    5.394_196_021_424_751_107_7e3,
    2.121_379_430_158_659_586_7e4,
    3.930_789_580_009_271_061e4,
    2.872_908_573_572_194_267_4e4,
    5.226_495_278_852_854_561e3,
];
const AS241_C: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    2.417_807_251_774_506_117_7e-1,
    2.272_384_498_926_918_458_33e-2,
    7.745_450_142_783_414_076_4e-4,
];
const AS241_D: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    6.897_673_349_851_000_045_5e-1,
    1.481_039_764_274_800_745_9e-1,
    1.519_866_656_361_645_719_66e-2,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
const AS241_E: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    2.965_605_718_285_048_912_3e-1,
    2.653_218_952_657_612_309_3e-2,
    1.242_660_947_388_078_438_6e-3,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
const AS241_F: [f64; 8] = [
    1.0,
    5.998_322_065_558_879_376_9e-1,
    1.369_298_809_227_358_053_1e-1,
    1.487_536_129_085_061_485_25e-2,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

/// The inverse standard normal CDF `Φ⁻¹(p)` by Wichura's AS 241 (PPND16), in f64.
///
/// `p = 0` gives −∞, `p = 1` gives +∞, and `p` outside `[0, 1]` or NaN gives NaN. The
/// central region `|p − ½| ≤ 0.425` uses one rational function of `(p − ½)²`, the tails
/// one of `sqrt(−ln min(p, 1 − p))`, so the lower tail keeps its relative precision.
pub fn inv_normal_cdf(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&AS241_A, r) / poly(&AS241_B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = libm::sqrt(-libm::log(tail));
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&AS241_C, r) / poly(&AS241_D, r)
    } else {
        let r = r - 5.0;
        poly(&AS241_E, r) / poly(&AS241_F, r)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

fn logit(t: f64) -> f64 {
    libm::log(t / (1.0 - t))
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-z))
}

/// A distribution of training times on `[t0, t1]` before the shift (§4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeDist {
    /// `t = t0 + (t1 − t0)·u`, `u ~ U(0, 1)` (the first release's `"uniform"`).
    Uniform {
        /// Lower end.
        t0: f64,
        /// Upper end.
        t1: f64,
    },
    /// `t = sigmoid(μ + σ·z)` with `z ~ N(0, 1)` truncated so that `t ∈ [t0, t1]`, drawn by
    /// inverse-CDF sampling: `U ~ U(Φ(α), Φ(β))`, `α = (logit t0 − μ)/σ`,
    /// `β = (logit t1 − μ)/σ`, `t = sigmoid(μ + σ·Φ⁻¹(U))`, clamped to `[t0, t1]`.
    /// Computed in f64, so unlike the f32 reference the upper bound really truncates.
    LogitNormal {
        /// Location `μ` of the logit.
        mu: f64,
        /// Scale `σ > 0` of the logit.
        sigma: f64,
        /// Lower end.
        t0: f64,
        /// Upper end.
        t1: f64,
    },
}

impl TimeDist {
    /// Uniform on the reference interval `[0, 0.999]`.
    pub const fn reference_uniform() -> Self {
        TimeDist::Uniform {
            t0: REFERENCE_T0,
            t1: REFERENCE_T1,
        }
    }

    /// Truncated logit-normal `(μ, σ)` on the reference interval `[0, 0.999]`.
    pub const fn reference_logit_normal(mu: f64, sigma: f64) -> Self {
        TimeDist::LogitNormal {
            mu,
            sigma,
            t0: REFERENCE_T0,
            t1: REFERENCE_T1,
        }
    }

    /// Parses the reference config string (`time_dist_type`, §4.2): `"uniform"` or
    /// `"logit-normal_<mu>_<sigma>"` (e.g. `"logit-normal_0_1"`), on `[0, 0.999]`.
    pub fn parse(s: &str) -> Result<Self> {
        let key = "time_dist_type";
        let mut parts = s.trim().split('_');
        match parts.next() {
            Some("uniform") if parts.next().is_none() => Ok(Self::reference_uniform()),
            Some("logit-normal") => {
                let mut num = |name: &str| -> Result<f64> {
                    let p = parts.next().ok_or_else(|| {
                        Error::config(key, format!("{s:?}: missing {name} (logit-normal_MU_SIGMA)"))
                    })?;
                    p.parse::<f64>().map_err(|_| {
                        Error::config(key, format!("{s:?}: {name} {p:?} is not a number"))
                    })
                };
                let mu = num("mu")?;
                let sigma = num("sigma")?;
                if parts.next().is_some() {
                    return Err(Error::config(
                        key,
                        format!("{s:?}: expected logit-normal_MU_SIGMA"),
                    ));
                }
                let d = Self::reference_logit_normal(mu, sigma);
                d.validate().map_err(|e| Error::config(key, e.to_string()))?;
                Ok(d)
            }
            _ => Err(Error::config(
                key,
                format!("unknown time distribution {s:?} (expected \"uniform\" or \"logit-normal_MU_SIGMA\")"),
            )),
        }
    }

    /// The interval `[t0, t1]`.
    pub fn interval(&self) -> (f64, f64) {
        match *self {
            TimeDist::Uniform { t0, t1 } | TimeDist::LogitNormal { t0, t1, .. } => (t0, t1),
        }
    }

    /// An error unless `0 ≤ t0 ≤ t1 ≤ 1` and, for the logit-normal, `μ` finite, `σ > 0`.
    pub fn validate(&self) -> Result<()> {
        let (t0, t1) = self.interval();
        if !(0.0 <= t0 && t0 <= t1 && t1 <= 1.0) {
            return Err(Error::invalid(
                "time distribution interval",
                format!("need 0 <= t0 <= t1 <= 1, got [{t0}, {t1}]"),
            ));
        }
        if let TimeDist::LogitNormal { mu, sigma, .. } = *self {
            if !mu.is_finite() || !(sigma > 0.0 && sigma.is_finite()) {
                return Err(Error::invalid(
                    "logit-normal time distribution",
                    format!("need a finite mu and sigma > 0, got mu = {mu}, sigma = {sigma}"),
                ));
            }
        }
        Ok(())
    }

    /// The CDF `P(T ≤ t)` of this distribution (used by tests and diagnostics).
    pub fn cdf(&self, t: f64) -> f64 {
        let (t0, t1) = self.interval();
        if t < t0 {
            return 0.0;
        }
        if t >= t1 {
            return 1.0;
        }
        match *self {
            TimeDist::Uniform { .. } => (t - t0) / (t1 - t0),
            TimeDist::LogitNormal { mu, sigma, .. } => {
                let (lo, hi) = self.cdf_bounds(mu, sigma);
                let ft = normal_cdf((logit(t) - mu) / sigma);
                ((ft - lo) / (hi - lo)).clamp(0.0, 1.0)
            }
        }
    }

    /// `(Φ(α), Φ(β))`: the standard-normal probabilities of the truncation bounds.
    fn cdf_bounds(&self, mu: f64, sigma: f64) -> (f64, f64) {
        let (t0, t1) = self.interval();
        let lo = if t0 <= 0.0 {
            0.0
        } else {
            normal_cdf((logit(t0) - mu) / sigma)
        };
        let hi = if t1 >= 1.0 {
            1.0
        } else {
            normal_cdf((logit(t1) - mu) / sigma)
        };
        (lo, hi)
    }

    /// The time for a uniform `u ∈ (0, 1)` (the inverse CDF), in f64.
    pub fn quantile(&self, u: f64) -> f64 {
        let (t0, t1) = self.interval();
        let t = match *self {
            TimeDist::Uniform { .. } => t0 + (t1 - t0) * u,
            TimeDist::LogitNormal { mu, sigma, .. } => {
                let (lo, hi) = self.cdf_bounds(mu, sigma);
                let p = lo + (hi - lo) * u;
                sigmoid(mu + sigma * inv_normal_cdf(p))
            }
        };
        t.clamp(t0, t1)
    }

    /// One draw, taking the next position of `rng`.
    pub fn sample(&self, rng: &mut PhiloxStream) -> f32 {
        self.quantile(rng.uniform() as f64) as f32
    }

    /// Fills `out` with draws (one stream position each), e.g. one time per sample.
    pub fn sample_into(&self, rng: &mut PhiloxStream, out: &mut [f32]) {
        rng.uniforms(out);
        for v in out.iter_mut() {
            *v = self.quantile(*v as f64) as f32;
        }
    }
}
