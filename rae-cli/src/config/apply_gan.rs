//! The YAML's `gan` block (`configs/stage1/training/*.yaml`, §2.7) onto the GAN flags:
//! `gan.disc.arch` (DINO checkpoint, recipe, kernel size, key depths), `gan.disc.augment`
//! (DiffAug), `gan.loss` (weights and epoch switches). What the reference allows but rae
//! does not implement (other losses, norms, several discriminator updates per step, a
//! discriminator optimiser other than the decoder's) is an error naming the key.

use super::gan_args::GanArgs;
use super::RefConfig;
use crate::errors::CliResult;
use rae_core::json::JsonValue;

impl RefConfig {
    /// Writes `gan` into `g` where the flag was not given (`explicit`).
    pub(super) fn apply_gan(
        &self,
        g: &mut GanArgs,
        explicit: &dyn Fn(&str) -> bool,
    ) -> CliResult<()> {
        if !self.has("gan") || explicit("no_gan") {
            return Ok(());
        }
        g.from_config = Some(self.source());
        let set = |name: &str| !explicit(name);
        if set("disc_weights") {
            if let Some(raw) = self.string("gan.disc.arch.dino_ckpt_path")? {
                // Not found: kept as written, and named with --disc-weights when the
                // discriminator is built (a run with --no-gan never needs it).
                let found = self.resolve("gan.disc.arch.dino_ckpt_path", &raw).ok();
                g.disc_weights = Some(found.unwrap_or_else(|| raw.into()));
            }
        }
        if set("disc_recipe") {
            g.disc_recipe = self.string("gan.disc.arch.recipe")?;
        }
        if let Some(ks) = self.uint("gan.disc.arch.ks")? {
            g.disc_ks = Some(ks as usize);
        }
        if let Some(v) = self.get("gan.disc.arch.key_depths") {
            let depths: Option<Vec<usize>> = match v {
                JsonValue::Array(a) => a.iter().map(JsonValue::as_usize).collect(),
                _ => None,
            };
            g.disc_key_depths = Some(depths.ok_or_else(|| {
                self.err(
                    "gan.disc.arch.key_depths",
                    format!("expected a list of depths, found {v}"),
                )
            })?);
        }
        self.require(
            "gan.disc.arch.norm_type",
            "bn",
            "only BatchNormLocal ('bn') is implemented",
        )?;
        if self.boolean("gan.disc.arch.using_spec_norm")? == Some(false) {
            return Err(self.err(
                "gan.disc.arch.using_spec_norm",
                "only the spectrally normalised heads (true) are implemented",
            ));
        }
        if let Some(p) = self.num("gan.disc.augment.prob")? {
            if p != 1.0 {
                return Err(self.err(
                    "gan.disc.augment.prob",
                    format!("{p}: only 1.0 (every batch) is implemented"),
                ));
            }
        }
        if set("diffaug_cutout") {
            if let Some(c) = self.num("gan.disc.augment.cutout")? {
                g.diffaug_cutout = Some(c as f32);
            }
        }
        self.require(
            "gan.loss.disc_loss",
            "hinge",
            "only the hinge discriminator loss is implemented",
        )?;
        self.require(
            "gan.loss.gen_loss",
            "vanilla",
            "only the vanilla generator loss is implemented",
        )?;
        if let Some(n) = self.uint("gan.loss.disc_updates")? {
            if n != 1 {
                return Err(self.err(
                    "gan.loss.disc_updates",
                    format!("{n}: one update per step is implemented"),
                ));
            }
        }
        let f32s: [(&str, &str, &mut Option<f32>); 3] = [
            ("gan.loss.disc_weight", "disc_weight", &mut g.disc_weight),
            (
                "gan.loss.perceptual_weight",
                "perceptual_weight",
                &mut g.perceptual_weight,
            ),
            ("gan.loss.max_d_weight", "max_d_weight", &mut g.max_d_weight),
        ];
        for (key, flag, slot) in f32s {
            if set(flag) {
                if let Some(x) = self.num(key)? {
                    *slot = Some(x as f32);
                }
            }
        }
        let epochs: [(&str, &str, &mut Option<f64>); 3] = [
            ("gan.loss.lpips_start", "lpips_start", &mut g.lpips_start),
            (
                "gan.loss.disc_upd_start",
                "disc_upd_start",
                &mut g.disc_upd_start,
            ),
            ("gan.loss.disc_start", "disc_start", &mut g.disc_start),
        ];
        for (key, flag, slot) in epochs {
            if set(flag) {
                if let Some(x) = self.num(key)? {
                    *slot = Some(x);
                }
            }
        }
        self.check_disc_optimizer()
    }

    /// A string key that, when present, must be `want`.
    fn require(&self, key: &str, want: &str, why: &str) -> CliResult<()> {
        match self.string(key)? {
            Some(v) if v != want => Err(self.err(key, format!("{v:?}: {why}"))),
            _ => Ok(()),
        }
    }

    /// The discriminator is trained with the decoder's optimiser settings and schedule (as in
    /// the released config): a `gan.disc.optimizer` / `gan.disc.scheduler` that differs is
    /// refused rather than silently replaced.
    fn check_disc_optimizer(&self) -> CliResult<()> {
        for (disc, train) in [
            ("gan.disc.optimizer.lr", "training.optimizer.lr"),
            (
                "gan.disc.optimizer.weight_decay",
                "training.optimizer.weight_decay",
            ),
            (
                "gan.disc.scheduler.warmup_epochs",
                "training.scheduler.warmup_epochs",
            ),
            (
                "gan.disc.scheduler.decay_end_epoch",
                "training.scheduler.decay_end_epoch",
            ),
            ("gan.disc.scheduler.base_lr", "training.scheduler.base_lr"),
            ("gan.disc.scheduler.final_lr", "training.scheduler.final_lr"),
        ] {
            if let (Some(d), Some(t)) = (self.num(disc)?, self.num(train)?) {
                if d != t {
                    return Err(self.err(
                        disc,
                        format!("{d} differs from {train} {t}: the discriminator uses the decoder's optimiser settings"),
                    ));
                }
            }
        }
        if let (Some(d), Some(t)) = (
            self.get("gan.disc.optimizer.betas"),
            self.get("training.optimizer.betas"),
        ) {
            if d != t {
                return Err(self.err(
                    "gan.disc.optimizer.betas",
                    format!("{d} differs from training.optimizer.betas {t}: the discriminator uses the decoder's optimiser settings"),
                ));
            }
        }
        Ok(())
    }
}
