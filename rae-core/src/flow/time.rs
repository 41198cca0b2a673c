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
// relative accuracy. Numerators `A`, `C`, `E`; denominators `B`, `D`, `F` (leading 1). The
// published 20-digit coefficients, written as the nearest f64.
const AS241_A: [f64; 8] = [
    3.3871328727963665,
    133.14166789178438,
    1971.5909503065513,
    13731.69376550946,
    45921.95393154987,
    67265.7709270087,
    33430.57558358813,
    2509.0809287301227,
];
const AS241_B: [f64; 8] = [
    1.0,
    42.31333070160091,
    687.1870074920579,
    5394.196021424751,
    21213.794301586597,
    39307.89580009271,
    28729.085735721943,
    5226.495278852854,
];
const AS241_C: [f64; 8] = [
    1.4234371107496835,
    4.630337846156546,
    5.769497221460691,
    3.6478483247632045,
    1.2704582524523684,
    0.2417807251774506,
    0.022723844989269184,
    0.0007745450142783414,
];
const AS241_D: [f64; 8] = [
    1.0,
    2.053191626637759,
    1.6763848301838038,
    0.6897673349851,
    0.14810397642748008,
    0.015198666563616457,
    0.0005475938084995345,
    1.0507500716444169e-09,
];
const AS241_E: [f64; 8] = [
    6.657904643501103,
    5.463784911164114,
    1.7848265399172913,
    0.29656057182850487,
    0.026532189526576124,
    0.0012426609473880784,
    2.7115555687434876e-05,
    2.0103343992922881e-07,
];
const AS241_F: [f64; 8] = [
    1.0,
    0.599832206555888,
    0.1369298809227358,
    0.014875361290850615,
    0.0007868691311456133,
    1.8463183175100548e-05,
    1.421511758316446e-07,
    2.0442631033899397e-15,
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
            if !(mu.is_finite() && sigma > 0.0 && sigma.is_finite()) {
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
