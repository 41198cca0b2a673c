//! The stage-1 step as the paper trains it (§2.7.2–§2.7.3): the decoder on
//! `L1 + ω_L·LPIPS + ω_G·λ·L_G` with the adaptive weight `λ`, then one hinge step of the
//! DINO discriminator's heads on DiffAug'd real images and 8-bit-quantised reconstructions
//! of the just-updated decoder in eval mode.
//!
//! The three switches are step counts (the caller turns epochs into steps): LPIPS from
//! `lpips_start`, discriminator updates from `disc_upd_start`, the adversarial term from
//! `disc_start`. Before `disc_start` both `L_G` and `λ` are zero. Without LPIPS weights or a
//! discriminator the corresponding terms are off, so the step reduces to
//! [`super::stage1_step`].
//!
//! `λ = clamp(‖∂L_R/∂W‖ / (‖∂L_G/∂W‖ + 10⁻⁶), 0, max)` with `W = decoder_pred.weight`: the
//! two gradients of the last layer come from the image gradients of the two terms without a
//! second pass through the decoder; the decoder's backward then runs once on
//! `∂L_R/∂x̂ + ω_G·λ·∂L_G/∂x̂` (the backward is linear in the image gradient).

mod checkpoint;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::stage1::{l1_term, noisy_tokens, to_standardized_grad};
use super::{GradHook, Optimizer, RngState, Stage1Config, StepReport};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::gan::diffaug::DiffAug;
use crate::gan::disc::{hinge_d_loss, vanilla_g_loss, Discriminator};
use crate::gan::lpips::Lpips;
use crate::models::{DecoderSaved, Mode, Rae};
use crate::nn::Grads;
use crate::tensor::Tensor;

/// The loss weights and switches of §2.7.2 (steps, not epochs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GanConfig {
    /// `ω_L` (`perceptual_weight`, 1.0).
    pub perceptual_weight: f32,
    /// `ω_G` (`disc_weight`, 0.75).
    pub disc_weight: f32,
    /// First step with LPIPS.
    pub lpips_start: u64,
    /// First step that updates the discriminator.
    pub disc_upd_start: u64,
    /// First step with the adversarial term in the decoder loss.
    pub disc_start: u64,
    /// Upper clamp of `λ` (`max_d_weight`, 10⁴).
    pub max_d_weight: f32,
    /// DiffAug's policy (cutout 0 in the released config).
    pub diffaug: DiffAug,
}

impl Default for GanConfig {
    fn default() -> Self {
        GanConfig {
            perceptual_weight: 1.0,
            disc_weight: 0.75,
            lpips_start: 0,
            disc_upd_start: 0,
            disc_start: 0,
            max_d_weight: 1e4,
            diffaug: DiffAug::default(),
        }
    }
}

/// The discriminator, its optimiser and the step counts it has taken.
#[derive(Debug, Clone)]
pub struct DiscState<B: Backend> {
    /// Frozen backbone and trainable heads.
    pub disc: Discriminator<B>,
    /// AdamW and schedule of the heads (stepped only when the discriminator updates).
    pub opt: Optimizer<B>,
}

/// The stage-1 [`Trainer`](super::Trainer) with LPIPS and the GAN.
#[derive(Debug, Clone)]
pub struct Stage1GanTrainer<B: Backend> {
    /// The RAE whose decoder is trained.
    pub rae: Rae<B>,
    /// The decoder's optimiser, the random streams, checkpoint metadata.
    pub state: super::RunState<B>,
    /// Latent noise of decoder training.
    pub config: Stage1Config,
    /// Loss weights and switches.
    pub gan: GanConfig,
    /// LPIPS (absent: no perceptual term).
    pub lpips: Option<Lpips<B>>,
    /// The discriminator (absent: no adversarial term, no discriminator step).
    pub disc: Option<DiscState<B>>,
}

/// `2x − 1`: `[0, 1]` images to `[−1, 1]`.
fn to_pm1<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    let n = x.numel();
    b.bcast_affine(
        x,
        Some(&b.full(&[1], 2.0)?),
        Some(&b.full(&[1], -1.0)?),
        [1, 1, n],
    )
}

/// `clamp(x, −1, 1)` then 8-bit quantisation `round((x + 1)·127.5)/127.5 − 1` (round half
/// to even, as `torch.round`), on the host.
fn quantise<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    let v: Vec<f32> = b
        .download(x)?
        .into_iter()
        .map(|p| libm::rintf((p.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0)
        .collect();
    b.upload(&v, x.dims())
}

/// The `[7, B]` DiffAug uniforms of this process's `local` samples: sample `g` of the
/// global batch reads positions `7g … 7g + 6` of the stream, so a data-parallel run draws
/// what one process with the whole batch draws.
fn draw_uniforms(rng: &mut RngState, cfg: &Stage1Config, local: usize) -> Vec<f32> {
    let s = cfg.shard.take(&mut rng.diffaug, local, 7);
    let mut by_sample = vec![0.0f32; 7 * local];
    crate::rng::fill_uniform(&mut by_sample, s.key, s.position);
    let mut u = vec![0.0f32; 7 * local];
    for i in 0..local {
        for k in 0..7 {
            u[k * local + i] = by_sample[i * 7 + k];
        }
    }
    u
}

/// `‖x‖₂` over all elements.
fn norm<B: Backend>(b: &B, x: &Tensor<B>) -> Result<f32> {
    Ok(libm::sqrtf(b.scalar(&b.sum_sq_all(x)?)?))
}

/// What one generator step measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenTerms {
    /// `mean|x̂ − x|`.
    pub l1: f32,
    /// LPIPS (0 when off).
    pub lpips: f32,
    /// `−mean D(DiffAug(2x̂ − 1))` (0 before `disc_start`).
    pub gan: f32,
    /// The adaptive weight (0 before `disc_start`).
    pub lambda: f32,
    /// `L1 + ω_L·LPIPS + ω_G·λ·L_G`.
    pub total: f32,
}

/// What one discriminator step measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiscTerms {
    /// The hinge loss.
    pub loss: f32,
    /// Fraction of (real, fake) logit pairs with real > fake.
    pub accuracy: f32,
    /// The heads' learning rate of the step.
    pub lr: f32,
}

/// The generator's objective on a training reconstruction `x̂` of `images` (§2.7.2): the
/// loss terms and the gradient of the total with respect to the decoder's standardised
/// output (what [`RaeDecoder::backward`](crate::models::RaeDecoder::backward) takes).
/// `lpips` and `disc` are the terms that are on at this step; `uniforms` are DiffAug's
/// `[7, B]` draws (read only with `disc`). The discriminator runs in eval mode.
#[allow(clippy::too_many_arguments)]
pub fn generator_objective<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    saved: &DecoderSaved<B>,
    x_hat: &Tensor<B>,
    images: &Tensor<B>,
    g: &GanConfig,
    lpips: Option<&Lpips<B>>,
    disc: Option<(&Discriminator<B>, &[f32])>,
) -> Result<(GenTerms, Tensor<B>)> {
    let (l1, mut d_rec) = l1_term(b, x_hat, images)?;
    let mut terms = GenTerms {
        l1,
        ..GenTerms::default()
    };
    let fake = to_pm1(b, x_hat)?;
    if let Some(lp) = lpips {
        let (v, s) = lp.forward(b, &to_pm1(b, images)?, &fake, true)?;
        terms.lpips = v.mean;
        let s = s.ok_or_else(|| Error::invalid("LPIPS", "forward kept no activations"))?;
        // d/dx̂ of ω_L·LPIPS(2x − 1, 2x̂ − 1) = 2·ω_L·∂LPIPS/∂(2x̂ − 1).
        let d = lp.backward(b, &s, 2.0 * g.perceptual_weight)?;
        d_rec = b.binary(crate::backend::Binary::Add, &d_rec, &d)?;
    }
    let mut d_total = d_rec.clone();
    if let Some((disc, u)) = disc {
        let (aug, asaved) = g.diffaug.apply(b, &fake, u)?;
        let (logits, dsaved) = disc.forward_eval(b, &aug, true)?;
        let (lg, dlogits) = vanilla_g_loss(b, &logits)?;
        terms.gan = lg;
        let mut heads_unused = Grads::new();
        let daug = disc
            .backward(b, &dsaved, &dlogits, &mut heads_unused, true)?
            .ok_or_else(|| Error::invalid("discriminator", "no input gradient"))?;
        let d_gan = b.scale(&g.diffaug.backward(b, &asaved, &daug)?, 2.0)?;
        let dec = &rae.decoder;
        let gr = dec.pred_weight_grad(b, saved, &to_standardized_grad(b, rae, &d_rec)?)?;
        let gg = dec.pred_weight_grad(b, saved, &to_standardized_grad(b, rae, &d_gan)?)?;
        // A NaN ratio survives the clamp and is caught with the loss below.
        terms.lambda = (norm(b, &gr)? / (norm(b, &gg)? + 1e-6)).clamp(0.0, g.max_d_weight);
        d_total = b.axpy(g.disc_weight * terms.lambda, &d_gan, &d_rec)?;
    }
    terms.total =
        terms.l1 + g.perceptual_weight * terms.lpips + g.disc_weight * terms.lambda * terms.gan;
    Ok((terms, to_standardized_grad(b, rae, &d_total)?))
}

/// The discriminator's hinge loss on a quantised fake and a real batch (both `[B, 3, H, W]`
/// in `[−1, 1]`), DiffAug'd with `uf` and `ur`, in training mode (one power iteration per
/// forward, the fake first): the loss, the accuracy and the heads' gradients.
pub fn discriminator_objective<B: Backend>(
    b: &B,
    disc: &mut Discriminator<B>,
    g: &GanConfig,
    fake: &Tensor<B>,
    real: &Tensor<B>,
    uf: &[f32],
    ur: &[f32],
) -> Result<(f32, f32, Grads<B>)> {
    let (fake_aug, _) = g.diffaug.apply(b, fake, uf)?;
    let (real_aug, _) = g.diffaug.apply(b, real, ur)?;
    let (lf, sf) = disc.forward_with(b, &fake_aug, true, false)?;
    let (lr, sr) = disc.forward_with(b, &real_aug, true, false)?;
    let (loss, dreal, dfake) = hinge_d_loss(b, &lr, &lf)?;
    let (rv, fv) = (b.download(&lr)?, b.download(&lf)?);
    let wins = rv.iter().zip(&fv).filter(|(r, f)| r > f).count();
    let mut grads = Grads::new();
    disc.backward(b, &sf, &dfake, &mut grads, false)?;
    disc.backward(b, &sr, &dreal, &mut grads, false)?;
    Ok((loss, wins as f32 / rv.len().max(1) as f32, grads))
}

/// The discriminator's fake: the decoder in eval mode on clean tokens, `2x̂ − 1` clamped and
/// quantised to 8 bits (§2.7.3).
pub fn quantised_fake<B: Backend>(b: &B, rae: &Rae<B>, clean: &Tensor<B>) -> Result<Tensor<B>> {
    let (img_std, _) = rae.decoder.forward(b, clean, Mode::Infer)?;
    quantise(b, &to_pm1(b, &rae.destandardize(b, &img_std)?)?)
}

impl<B: Backend> Stage1GanTrainer<B> {
    /// One generator (decoder) step on images `[B, 3, H, W]` in `[0, 1]`; returns the loss
    /// terms, the clean encoder tokens (for the discriminator step) and the optimiser report.
    pub fn generator_step(
        &mut self,
        b: &B,
        images: &Tensor<B>,
        hook: &mut dyn GradHook<B>,
    ) -> Result<(GenTerms, Tensor<B>, StepReport)> {
        let step = self.state.opt.step();
        let g = self.gan;
        let use_lpips = step >= g.lpips_start && g.perceptual_weight > 0.0;
        let use_gan = step >= g.disc_start && g.disc_weight > 0.0;
        let clean = self.rae.encode_tokens(b, images)?;
        let tokens = noisy_tokens(b, &self.rae, &mut self.state.rng, &self.config, &clean)?;
        let (img_std, saved) = self.rae.decoder.forward(b, &tokens, Mode::Train)?;
        let saved = saved.ok_or_else(|| {
            Error::invalid("stage-1 GAN step", "training forward kept no activations")
        })?;
        let x_hat = self.rae.destandardize(b, &img_std)?;
        let disc = match (&self.disc, use_gan) {
            (Some(ds), true) => {
                let u = draw_uniforms(&mut self.state.rng, &self.config, images.dims()[0]);
                Some((&ds.disc, u))
            }
            _ => None,
        };
        let lpips = self.lpips.as_ref().filter(|_| use_lpips);
        let (terms, dimg) = generator_objective(
            b,
            &self.rae,
            &saved,
            &x_hat,
            images,
            &g,
            lpips,
            disc.as_ref().map(|(d, u)| (*d, u.as_slice())),
        )?;
        if !terms.total.is_finite() || !terms.lambda.is_finite() {
            return Err(Error::NonFinite {
                what: format!(
                    "the stage-1 loss at step {} (L1 {}, LPIPS {}, G {}, λ {})",
                    step + 1,
                    terms.l1,
                    terms.lpips,
                    terms.gan,
                    terms.lambda
                ),
            });
        }
        let mut grads = Grads::new();
        self.rae.decoder.backward(b, &saved, &dimg, &mut grads)?;
        let report = self
            .state
            .opt
            .apply_reduced(b, &mut self.rae.decoder, &grads, hook)?;
        Ok((terms, clean, report))
    }

    /// One hinge step of the discriminator heads against the just-updated decoder in eval
    /// mode on the clean tokens (no latent noise). `None` when there is no discriminator or
    /// its updates have not started (`step` is the generator's step count before this
    /// iteration).
    pub fn discriminator_step(
        &mut self,
        b: &B,
        images: &Tensor<B>,
        clean: &Tensor<B>,
        step: u64,
        hook: &mut dyn GradHook<B>,
    ) -> Result<Option<DiscTerms>> {
        let g = self.gan;
        let Some(ds) = &mut self.disc else {
            return Ok(None);
        };
        if step < g.disc_upd_start || g.disc_weight <= 0.0 {
            return Ok(None);
        }
        let fake = quantised_fake(b, &self.rae, clean)?;
        let real = to_pm1(b, images)?;
        let bs = images.dims()[0];
        // The reference augments the fake first, then the real.
        let uf = draw_uniforms(&mut self.state.rng, &self.config, bs);
        let ur = draw_uniforms(&mut self.state.rng, &self.config, bs);
        let (loss, accuracy, grads) =
            discriminator_objective(b, &mut ds.disc, &g, &fake, &real, &uf, &ur)?;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                what: format!("the discriminator loss at step {}", step + 1),
            });
        }
        let report = ds.opt.apply_reduced(b, &mut ds.disc, &grads, hook)?;
        Ok(Some(DiscTerms {
            loss,
            accuracy,
            lr: report.lr,
        }))
    }
}

impl<B: Backend> super::Trainer<B> for Stage1GanTrainer<B> {
    type Batch = Tensor<B>;

    fn step(&self) -> u64 {
        self.state.opt.step()
    }

    fn train_step(
        &mut self,
        b: &B,
        batch: &Tensor<B>,
        hook: &mut dyn GradHook<B>,
    ) -> Result<super::StepOutcome> {
        let step = self.state.opt.step();
        let (t, clean, report) = self.generator_step(b, batch, hook)?;
        let d = self.discriminator_step(b, batch, &clean, step, hook)?;
        let mut terms = vec![("L1", t.l1)];
        if self.lpips.is_some() {
            terms.push(("LPIPS", t.lpips));
        }
        if self.disc.is_some() {
            let d = d.unwrap_or_default();
            terms.extend([
                ("G", t.gan),
                ("lambda", t.lambda),
                ("D", d.loss),
                ("D_acc", d.accuracy),
                ("lr_D", d.lr),
            ]);
        }
        Ok(super::StepOutcome {
            loss: t.total,
            terms,
            report,
        })
    }

    fn capture(&self, b: &B) -> Result<super::TrainCheckpoint> {
        checkpoint::capture(self, b)
    }

    fn restore(&mut self, b: &B, ck: &super::TrainCheckpoint, source: &str) -> Result<()> {
        checkpoint::restore(self, b, ck, source)
    }

    fn broadcast_from(
        &mut self,
        b: &B,
        coll: &mut dyn super::Collective<B>,
        root: usize,
    ) -> Result<()> {
        super::broadcast_module(b, &mut self.rae.decoder, coll, root)?;
        if let Some(ds) = &mut self.disc {
            super::broadcast_module(b, &mut ds.disc, coll, root)?;
        }
        Ok(())
    }
}
