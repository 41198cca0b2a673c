//! Classifier-free guidance (§4.6) and AutoGuidance (§4.7) as [`VelocityField`]s.
//!
//! Both act on all channels (§10.21) and only inside the time interval
//! `t_min ≤ t ≤ t_max` (flow time, 1 = noise, both bounds inclusive); outside it the field
//! is the conditional (main-model) velocity.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::check;
use crate::error::{Error, Result};
use crate::flow::sampler::VelocityField;
use crate::tensor::Tensor;

/// A class-conditional velocity model `v(x, t, y)`: `x` `[n, ...]`, one flow time for the
/// batch, labels `[n]` (the null label, e.g. 1000 for ImageNet, means "unconditional").
pub trait ConditionalModel<B: Backend> {
    /// The velocity, shaped like `x`.
    fn predict(&mut self, x: &Tensor<B>, t: f32, labels: &[u32]) -> Result<Tensor<B>>;
}

impl<B, F> ConditionalModel<B> for F
where
    B: Backend,
    F: FnMut(&Tensor<B>, f32, &[u32]) -> Result<Tensor<B>>,
{
    fn predict(&mut self, x: &Tensor<B>, t: f32, labels: &[u32]) -> Result<Tensor<B>> {
        self(x, t, labels)
    }
}

/// The guidance weight and the flow-time interval where it applies (§4.6, §4.7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceInterval {
    /// Guidance weight `w` (1 = no guidance).
    pub scale: f32,
    /// Lower end of the interval (inclusive).
    pub t_min: f32,
    /// Upper end of the interval (inclusive).
    pub t_max: f32,
}

impl GuidanceInterval {
    /// Weight `w` on the reference default interval `[0, 1]` (always on).
    pub fn always(scale: f32) -> Self {
        GuidanceInterval {
            scale,
            t_min: 0.0,
            t_max: 1.0,
        }
    }

    /// Whether guidance applies at flow time `t` (both bounds inclusive).
    pub fn active(&self, t: f32) -> bool {
        self.t_min <= t && t <= self.t_max
    }

    fn validate(&self, what: &str) -> Result<()> {
        let ordered = self.t_min <= self.t_max;
        if !self.scale.is_finite() || !ordered {
            return Err(Error::invalid(
                what,
                format!(
                    "need a finite weight and t_min <= t_max, got w = {}, [{}, {}]",
                    self.scale, self.t_min, self.t_max
                ),
            ));
        }
        Ok(())
    }
}

/// `base + w·(target − base)`, written as `(1 − w)·base + w·target` so that `w = 1` returns
/// `target` and `w = 0` returns `base` exactly.
fn extrapolate<B: Backend>(
    b: &B,
    base: &Tensor<B>,
    target: &Tensor<B>,
    w: f32,
) -> Result<Tensor<B>> {
    let scaled = b.scale(base, 1.0 - w)?;
    b.axpy(w, target, &scaled)
}

fn check_batch<B: Backend>(what: &'static str, x: &Tensor<B>, labels: &[u32]) -> Result<usize> {
    let n = x.shape().dim(0).unwrap_or(0);
    if x.shape().rank() == 0 || n == 0 {
        return Err(Error::bad_shape(
            what,
            x.shape(),
            "expected a batch [n, ...] with n > 0",
        ));
    }
    if labels.len() != n {
        return Err(Error::invalid(
            what,
            format!("{} labels for a batch of {n}", labels.len()),
        ));
    }
    Ok(n)
}

/// Classifier-free guidance (§4.6): `v = v_u + w·(v_c − v_u)` inside the interval, `v_c`
/// outside.
///
/// Inside the interval the model is called once on the doubled batch `concat(x, x)`
/// `[2n, ...]` with labels `[y; null]` (built with [`Backend::concat_mid`] on `[1, 1, n·rest]`
/// views and split back with [`Backend::slice_mid`] on the `[1, 2, n·rest]` view); the
/// result is the guided velocity of the `n` samples. Outside the interval only the
/// conditional half is evaluated (the reference evaluates both and discards one).
#[derive(Debug)]
pub struct ClassifierFreeGuidance<'a, B: Backend, M> {
    backend: &'a B,
    model: M,
    labels: Vec<u32>,
    null_label: u32,
    guidance: GuidanceInterval,
}

impl<'a, B: Backend, M: ConditionalModel<B>> ClassifierFreeGuidance<'a, B, M> {
    /// Guidance of `model` for class `labels` `[n]`, with the unconditional `null_label`.
    pub fn new(
        backend: &'a B,
        model: M,
        labels: &[u32],
        null_label: u32,
        guidance: GuidanceInterval,
    ) -> Result<Self> {
        guidance.validate("classifier-free guidance")?;
        Ok(ClassifierFreeGuidance {
            backend,
            model,
            labels: labels.to_vec(),
            null_label,
            guidance,
        })
    }

    /// The wrapped model back.
    pub fn into_model(self) -> M {
        self.model
    }
}

impl<B: Backend, M: ConditionalModel<B>> VelocityField<B> for ClassifierFreeGuidance<'_, B, M> {
    fn velocity(&mut self, x: &Tensor<B>, t: f32) -> Result<Tensor<B>> {
        let b = self.backend;
        let n = check_batch("classifier-free guidance", x, &self.labels)?;
        if !self.guidance.active(t) {
            let v = self.model.predict(x, t, &self.labels)?;
            check::same_shape(
                "classifier-free guidance (model output)",
                x.shape(),
                v.shape(),
            )?;
            return Ok(v);
        }
        let flat = x.numel();
        let mut doubled_dims: Vec<usize> = x.dims().to_vec();
        doubled_dims[0] = 2 * n;
        let x_in = b.concat_mid(&[x, x], 1, flat)?.reshape(&doubled_dims)?;
        let mut labels = self.labels.clone();
        labels.resize(2 * n, self.null_label);
        let out = self.model.predict(&x_in, t, &labels)?;
        check::same_shape(
            "classifier-free guidance (model output)",
            x_in.shape(),
            out.shape(),
        )?;
        let v_c = b.slice_mid(&out, [1, 2, flat], 0, 1)?.reshape(x.dims())?;
        let v_u = b.slice_mid(&out, [1, 2, flat], 1, 1)?.reshape(x.dims())?;
        extrapolate(b, &v_u, &v_c, self.guidance.scale)
    }
}

/// AutoGuidance (§4.7): `v = v_g + w·(v_main − v_g)` inside the interval, `v_main` outside,
/// where the guide is a weaker model of the same task called with the **same**
/// (conditional) labels (§10.22). Outside the interval the guide is not evaluated.
#[derive(Debug)]
pub struct AutoGuidance<'a, B: Backend, M, G> {
    backend: &'a B,
    main: M,
    guide: G,
    labels: Vec<u32>,
    guidance: GuidanceInterval,
}

impl<'a, B: Backend, M: ConditionalModel<B>, G: ConditionalModel<B>> AutoGuidance<'a, B, M, G> {
    /// Guidance of `main` by `guide` for class `labels` `[n]`.
    pub fn new(
        backend: &'a B,
        main: M,
        guide: G,
        labels: &[u32],
        guidance: GuidanceInterval,
    ) -> Result<Self> {
        guidance.validate("autoguidance")?;
        Ok(AutoGuidance {
            backend,
            main,
            guide,
            labels: labels.to_vec(),
            guidance,
        })
    }

    /// The wrapped models back (main, guide).
    pub fn into_models(self) -> (M, G) {
        (self.main, self.guide)
    }
}

impl<B: Backend, M: ConditionalModel<B>, G: ConditionalModel<B>> VelocityField<B>
    for AutoGuidance<'_, B, M, G>
{
    fn velocity(&mut self, x: &Tensor<B>, t: f32) -> Result<Tensor<B>> {
        check_batch("autoguidance", x, &self.labels)?;
        let v_main = self.main.predict(x, t, &self.labels)?;
        check::same_shape(
            "autoguidance (main model output)",
            x.shape(),
            v_main.shape(),
        )?;
        if !self.guidance.active(t) {
            return Ok(v_main);
        }
        let v_guide = self.guide.predict(x, t, &self.labels)?;
        check::same_shape(
            "autoguidance (guide model output)",
            x.shape(),
            v_guide.shape(),
        )?;
        extrapolate(self.backend, &v_guide, &v_main, self.guidance.scale)
    }
}
