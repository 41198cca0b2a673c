//! One stage-1 (decoder) step (§2.5, §2.7.2): frozen encoder tokens plus per-sample
//! Gaussian noise, decoder, `L1 = mean|x̂ − x|` in `[0, 1]` pixel space, backward, then
//! [`Optimizer::apply`]. LPIPS and the adversarial term are not part of this step.

use alloc::format;

use super::{Optimizer, RngState, Shard, StepReport};
use crate::backend::{Backend, Binary, Unary};
use crate::error::{Error, Result};
use crate::models::{Mode, NoiseRule, Rae};
use crate::nn::Grads;
use crate::tensor::Tensor;

/// Stage-1 settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage1Config {
    /// Noise scale `τ` (0.8 for the released decoders, §2.5).
    pub noise_tau: f32,
    /// How the per-sample level is drawn.
    pub noise_rule: NoiseRule,
    /// This process's share of the global batch (data-parallel runs; [`Shard::SINGLE`]
    /// otherwise).
    pub shard: Shard,
}

/// Runs one decoder step on images `[B, 3, H, W]` in `[0, 1]` (the decoder's output size).
/// Returns the L1 loss. A non-finite loss is [`Error::NonFinite`] and changes nothing.
pub fn stage1_step<B: Backend>(
    b: &B,
    rae: &mut Rae<B>,
    opt: &mut Optimizer<B>,
    rng: &mut RngState,
    cfg: &Stage1Config,
    images: &Tensor<B>,
) -> Result<(f32, StepReport)> {
    stage1_step_reduced(b, rae, opt, rng, cfg, images, &mut super::NoReduce)
}

/// [`stage1_step`] with `hook` applied to the gradients before the optimiser (the
/// data-parallel reduction).
pub fn stage1_step_reduced<B: Backend>(
    b: &B,
    rae: &mut Rae<B>,
    opt: &mut Optimizer<B>,
    rng: &mut RngState,
    cfg: &Stage1Config,
    images: &Tensor<B>,
    hook: &mut dyn super::GradHook<B>,
) -> Result<(f32, StepReport)> {
    let tokens = rae.encode_tokens(b, images)?;
    let tokens = noisy_tokens(b, rae, rng, cfg, &tokens)?;
    let (img_std, saved) = rae.decoder.forward(b, &tokens, Mode::Train)?;
    let x_hat = rae.destandardize(b, &img_std)?;
    let (loss, dxhat) = l1_term(b, &x_hat, images)?;
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the stage-1 loss at step {}", opt.step() + 1),
        });
    }
    let dimg = to_standardized_grad(b, rae, &dxhat)?;
    let saved = saved
        .ok_or_else(|| Error::invalid("stage-1 step", "training forward kept no activations"))?;
    let mut grads = Grads::new();
    rae.decoder.backward(b, &saved, &dimg, &mut grads)?;
    let report = opt.apply_reduced(b, &mut rae.decoder, &grads, hook)?;
    Ok((loss, report))
}

/// The encoder's tokens with the per-sample latent noise of decoder training (§2.5) when
/// `τ > 0`, drawn from this process's share of the streams.
pub(crate) fn noisy_tokens<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    rng: &mut RngState,
    cfg: &Stage1Config,
    tokens: &Tensor<B>,
) -> Result<Tensor<B>> {
    if cfg.noise_tau <= 0.0 {
        return Ok(tokens.clone());
    }
    let bs = tokens.dims()[0].max(1);
    let noise = cfg
        .shard
        .take(&mut rng.token_noise, bs, (tokens.numel() / bs) as u64);
    let mut levels = cfg.shard.take(&mut rng.token_level, bs, 1);
    rae.add_token_noise(
        b,
        tokens,
        cfg.noise_tau,
        cfg.noise_rule,
        &mut levels,
        noise.key,
        noise.position,
    )
}

/// `mean|x̂ − x|` and its gradient with respect to `x̂` (§2.7.2).
pub(crate) fn l1_term<B: Backend>(
    b: &B,
    x_hat: &Tensor<B>,
    images: &Tensor<B>,
) -> Result<(f32, Tensor<B>)> {
    if x_hat.dims() != images.dims() {
        return Err(Error::shape(
            "stage-1 step (decoder output vs images)",
            images.shape(),
            x_hat.shape(),
        ));
    }
    let diff = b.binary(Binary::Sub, x_hat, images)?;
    let n = diff.numel() as f32;
    let loss = b.scalar(&b.sum_all(&b.unary(Unary::Abs, &diff)?)?)? / n;
    // d/dx̂ mean|x̂ − x| = sign/n.
    let d = b.unary_backward(Unary::Abs, &diff, &b.full(diff.dims(), 1.0 / n)?)?;
    Ok((loss, d))
}

/// A gradient with respect to the `[0, 1]`-scale image `x̂ = img·σ + μ` as one with respect
/// to the decoder's standardised output `img` (per channel).
pub(crate) fn to_standardized_grad<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    dxhat: &Tensor<B>,
) -> Result<Tensor<B>> {
    let d = dxhat.dims().to_vec();
    let sigma = b.upload(&rae.image_std, &[3])?;
    b.bcast_affine(dxhat, Some(&sigma), None, [d[0], 3, d[2] * d[3]])
}

/// The stage-1 [`Trainer`](super::Trainer): the decoder of a RAE (its encoder frozen), the
/// optimiser and random streams; a batch is images `[B, 3, H, W]` in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Stage1Trainer<B: Backend> {
    /// The RAE whose decoder is trained (the EMA lives in `state.opt`).
    pub rae: Rae<B>,
    /// Optimiser, random streams, checkpoint metadata.
    pub state: super::RunState<B>,
    /// Latent noise of decoder training.
    pub config: Stage1Config,
}

impl<B: Backend> super::Trainer<B> for Stage1Trainer<B> {
    type Batch = Tensor<B>;

    fn step(&self) -> u64 {
        self.state.opt.step()
    }

    fn train_step(
        &mut self,
        b: &B,
        batch: &Tensor<B>,
        hook: &mut dyn super::GradHook<B>,
    ) -> Result<super::StepOutcome> {
        let s = &mut self.state;
        let (loss, report) = stage1_step_reduced(
            b,
            &mut self.rae,
            &mut s.opt,
            &mut s.rng,
            &self.config,
            batch,
            hook,
        )?;
        Ok(super::StepOutcome {
            loss,
            terms: alloc::vec![("L1", loss)],
            report,
        })
    }

    fn capture(&self, b: &B) -> Result<super::TrainCheckpoint> {
        let s = &self.state;
        super::TrainCheckpoint::capture(b, &self.rae.decoder, &s.opt, &s.rng, &s.metadata)
    }

    fn restore(&mut self, b: &B, ck: &super::TrainCheckpoint, source: &str) -> Result<()> {
        let config = self.state.opt.config.clone();
        let (opt, rng) = ck.restore(b, &mut self.rae.decoder, config, "RAE decoder", source)?;
        self.state.opt = opt;
        self.state.rng = rng;
        Ok(())
    }

    fn broadcast_from(
        &mut self,
        b: &B,
        coll: &mut dyn super::Collective<B>,
        root: usize,
    ) -> Result<()> {
        super::broadcast_module(b, &mut self.rae.decoder, coll, root)
    }
}
