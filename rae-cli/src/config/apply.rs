//! Writing a config into the arguments of `train` and `sample` (flags given on the
//! command line win), and finding the files it names.

use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::models::DecoderConfig;

use super::{RefConfig, SamplePlan};
use crate::cli::{RaeArgs, SampleArgs, TrainArgs};
use crate::errors::CliResult;
use crate::hub::Want;
use crate::store::encoders::{EncoderConfig, Family};
use crate::store::tensor_file::load_json;

impl RefConfig {
    /// The sampler name of the CLI (`euler`, `heun`, `sde`, `sde-heun`) from `sampler.mode`
    /// and `sampler.params.sampling_method`.
    pub fn sampler_name(&self) -> CliResult<Option<String>> {
        if !self.has("sampler") {
            return Ok(None);
        }
        if self.boolean("sampler.params.reverse")? == Some(true) {
            return Err(self.err("sampler.params.reverse", "only reverse: false is supported"));
        }
        let mode = self
            .string("sampler.mode")?
            .unwrap_or_else(|| "ODE".into())
            .to_ascii_uppercase();
        let method = self
            .string("sampler.params.sampling_method")?
            .map(|m| m.to_ascii_lowercase());
        let name = match (mode.as_str(), method.as_deref()) {
            ("ODE", None | Some("euler")) => "euler",
            ("ODE", Some("heun" | "heun2")) => "heun",
            ("ODE", Some(m)) => {
                return Err(self.err(
                    "sampler.params.sampling_method",
                    format!("ODE method {m:?} is not available (euler, heun2)"),
                ))
            }
            ("SDE", None | Some("euler")) => "sde",
            ("SDE", Some("heun")) => "sde-heun",
            ("SDE", Some(m)) => {
                return Err(self.err(
                    "sampler.params.sampling_method",
                    format!("SDE method {m:?} is not available (Euler, Heun)"),
                ))
            }
            (m, _) => return Err(self.err("sampler.mode", format!("{m:?}: use ODE or SDE"))),
        };
        Ok(Some(name.to_string()))
    }

    /// `guidance.method`: `Some(true)` for AutoGuidance, `Some(false)` for CFG.
    pub fn autoguidance(&self) -> CliResult<Option<bool>> {
        match self.string("guidance.method")?.as_deref() {
            None => Ok(self.has("guidance").then_some(false)),
            Some(m) if m.eq_ignore_ascii_case("cfg") => Ok(Some(false)),
            Some(m) if m.eq_ignore_ascii_case("autoguidance") => Ok(Some(true)),
            Some(m) => Err(self.err("guidance.method", format!("{m:?}: use cfg or autoguidance"))),
        }
    }

    /// `guidance.t_min`/`t_max` (either spelling) as the CLI's `MIN,MAX`.
    pub fn guidance_interval(&self) -> CliResult<Option<String>> {
        let lo = self.num_any(&["guidance.t_min", "guidance.t-min"])?;
        let hi = self.num_any(&["guidance.t_max", "guidance.t-max"])?;
        if lo.is_none() && hi.is_none() {
            return Ok(None);
        }
        Ok(Some(format!("{},{}", lo.unwrap_or(0.0), hi.unwrap_or(1.0))))
    }

    /// Checks the parts of `transport` the implementation fixes (linear path, velocity
    /// prediction, no loss weight; §4.1).
    fn check_transport(&self) -> CliResult<()> {
        if let Some(p) = self.string("transport.params.path_type")? {
            if !p.eq_ignore_ascii_case("linear") {
                return Err(self.err(
                    "transport.params.path_type",
                    format!("{p:?}: only the Linear path is implemented (§4.1)"),
                ));
            }
        }
        if let Some(p) = self.string("transport.params.prediction")? {
            if !p.eq_ignore_ascii_case("velocity") {
                return Err(self.err(
                    "transport.params.prediction",
                    format!("{p:?}: only velocity prediction is implemented (§4.1)"),
                ));
            }
        }
        if let Some(w) = self.get("transport.params.loss_weight") {
            return Err(self.err(
                "transport.params.loss_weight",
                format!("{w}: only an unweighted loss (null) is implemented (§4.1)"),
            ));
        }
        Ok(())
    }

    /// Finds a file or folder named in the config: as given (the current folder for a
    /// relative path), else under the config's folder or any folder above it.
    pub fn resolve(&self, key: &str, raw: &str) -> CliResult<PathBuf> {
        let p = Path::new(raw);
        if p.exists() {
            return Ok(p.to_path_buf());
        }
        if p.is_relative() {
            let dir = self.path.parent().unwrap_or(Path::new(""));
            for up in dir.ancestors() {
                let c = up.join(p);
                if c.exists() {
                    return Ok(c);
                }
            }
        }
        let hub = key.starts_with("stage_1.params.encoder")
            && p.is_relative()
            && p.components().count() == 2
            && !raw.starts_with('.');
        Err(if hub {
            // As the reference's `from_pretrained`: a HuggingFace hub id, read from the local
            // HF cache (downloaded there first with the `hub` feature).
            let id = PathBuf::from(format!("{}{raw}", crate::hub::id::PREFIX));
            match crate::hub::resolve_path(&id, Want::Folder, key) {
                Ok(dir) => return Ok(dir),
                Err(e) => self.err(
                    key,
                    format!(
                        "{raw:?} is not a local folder, and as a HuggingFace hub id: {e}. \
                         Or pass --encoder DIR (a local folder with config.json + model.safetensors)"
                    ),
                ),
            }
        } else {
            self.err(
                key,
                format!(
                    "{raw:?} not found (looked in the current folder and in the config's folder and those above it)"
                ),
            )
        })
    }

    /// Maps `stage_1.params` onto the RAE flags that were not given explicitly; `rae_explicit`
    /// (`--rae DIR`) leaves the RAE entirely to the flags.
    fn apply_stage1(
        &self,
        r: &mut RaeArgs,
        explicit: &dyn Fn(&str) -> bool,
        notes: &mut Vec<String>,
    ) -> CliResult<()> {
        if !self.has("stage_1.params") {
            return Ok(());
        }
        if explicit("rae") {
            notes.push(format!(
                "config {}: stage_1: --rae given, the config's RAE paths are not used",
                self.source()
            ));
            return Ok(());
        }
        if self.boolean("stage_1.params.reshape_to_2d")? == Some(false) {
            return Err(self.err(
                "stage_1.params.reshape_to_2d",
                "only 2-D latents (true) are supported",
            ));
        }
        if let Some(eps) = self.num("stage_1.params.eps")? {
            if (eps - 1e-5).abs() > 1e-12 {
                return Err(self.err(
                    "stage_1.params.eps",
                    format!("{eps}: the latent normalisation uses eps 1e-5 (§2.4)"),
                ));
            }
        }
        if self.boolean("stage_1.params.encoder_params.normalize")? == Some(false) {
            return Err(self.err(
                "stage_1.params.encoder_params.normalize",
                "only the encoder with its final norm (normalize: true) is supported",
            ));
        }
        // The weights come from encoder_params (dinov2_path / model_name), the processor from
        // encoder_config_path; a local HuggingFace folder holds both.
        let enc_key = ["dinov2_path", "model_name"]
            .iter()
            .map(|k| format!("stage_1.params.encoder_params.{k}"))
            .find(|k| self.has(k))
            .unwrap_or_else(|| "stage_1.params.encoder_config_path".into());
        if !explicit("encoder") {
            if let Some(raw) = self.string(&enc_key)? {
                r.encoder = Some(self.resolve(&enc_key, &raw)?);
            }
        }
        if !explicit("encoder_input_size") {
            if let Some(n) = self.uint("stage_1.params.encoder_input_size")? {
                r.encoder_input_size = Some(n as usize);
            }
        }
        if let Some(cls) = self.string("stage_1.params.encoder_cls")? {
            let want = match cls.as_str() {
                "Dinov2withNorm" => Some(Family::Dinov2),
                "SigLIP2wNorm" => Some(Family::Siglip),
                "MAEwNorm" => Some(Family::Mae),
                _ => None,
            };
            let Some(want) = want else {
                return Err(self.err(
                    "stage_1.params.encoder_cls",
                    format!("{cls:?} is not an encoder rae-cli has (Dinov2withNorm, SigLIP2wNorm, MAEwNorm)"),
                ));
            };
            if let Some(dir) = &r.encoder {
                let have = match EncoderConfig::read(dir)? {
                    EncoderConfig::Dinov2(_) => Family::Dinov2,
                    EncoderConfig::Siglip(_) => Family::Siglip,
                    EncoderConfig::Mae(_) => Family::Mae,
                };
                if have != want {
                    return Err(self.err(
                        "stage_1.params.encoder_cls",
                        format!(
                            "{cls} but the encoder folder {} holds a {have:?} model",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        if !explicit("decoder") {
            if let Some(raw) = self.string("stage_1.params.pretrained_decoder_path")? {
                r.decoder = Some(self.resolve("stage_1.params.pretrained_decoder_path", &raw)?);
            }
        }
        if !explicit("stats") {
            if let Some(raw) = self.string("stage_1.params.normalization_stat_path")? {
                r.stats = Some(self.resolve("stage_1.params.normalization_stat_path", &raw)?);
            }
        }
        if !explicit("decoder_config") {
            if let Some(raw) = self.string("stage_1.params.decoder_config_path")? {
                let key = "stage_1.params.decoder_config_path";
                let p = self.resolve(key, &raw)?;
                let file = if p.is_dir() { p.join("config.json") } else { p };
                let enc = r.encoder.as_deref().ok_or_else(|| {
                    self.err(key, "the decoder's sizes follow the encoder: give stage_1.params.encoder_config_path or --encoder")
                })?;
                let dec = self.reference_decoder_config(&file, enc, r.encoder_input_size)?;
                r.decoder_config = Some(dec.to_json().to_json_string()?);
            }
        }
        Ok(())
    }

    /// The decoder configuration as the reference builds it (`src/stage1/rae.py`, §2.6.1):
    /// the file's sizes with `hidden_size` = the encoder width, `patch_size` =
    /// `decoder_patch_size` (16) and `image_size` = patch × the encoder's token grid.
    pub fn reference_decoder_config(
        &self,
        file: &Path,
        encoder_dir: &Path,
        encoder_input_size: Option<usize>,
    ) -> CliResult<DecoderConfig> {
        let (width, enc_patch) = EncoderConfig::read(encoder_dir)?.dims();
        let input = encoder_input_size.unwrap_or(224);
        if enc_patch == 0 || !input.is_multiple_of(enc_patch) {
            return Err(self.err(
                "stage_1.params.encoder_input_size",
                format!("{input} is not a multiple of the encoder's patch size {enc_patch}"),
            ));
        }
        let patch = self
            .uint("stage_1.params.decoder_patch_size")?
            .unwrap_or(16) as usize;
        let mut v = load_json(file)?;
        if let JsonValue::Object(members) = &mut v {
            members.retain(|(k, _)| {
                !matches!(k.as_str(), "hidden_size" | "patch_size" | "image_size")
            });
            members.push(("hidden_size".into(), width.into()));
            members.push(("patch_size".into(), patch.into()));
            members.push(("image_size".into(), (patch * (input / enc_patch)).into()));
        }
        Ok(DecoderConfig::from_json(&v, &file.display().to_string())?)
    }

    /// Writes the config's settings into `train`'s arguments (flags in `explicit` win) and
    /// returns the lines to show the user.
    pub fn apply_train(
        &self,
        a: &mut TrainArgs,
        explicit: &dyn Fn(&str) -> bool,
    ) -> CliResult<Vec<String>> {
        let mut notes = self.notes()?;
        self.check_transport()?;
        let stage = if self.has("stage_2") { 2 } else { 1 };
        if !explicit("stage") {
            a.stage = Some(stage);
        }
        self.apply_stage1(&mut a.rae, explicit, &mut notes)?;
        if a.stage == Some(1) {
            self.apply_gan(&mut a.gan, explicit)?;
        }
        let set = |name: &str| !explicit(name);
        if set("time_dist") {
            if let Some(t) = self.string("transport.params.time_dist_type")? {
                a.time_dist = t;
            }
        }
        if set("shift_base") {
            if let Some(s) = self.uint("misc.time_dist_shift_base")? {
                a.shift_base = Some(s as usize);
            }
        }
        if set("noise_tau") && a.stage == Some(1) {
            if let Some(t) = self.num("stage_1.params.noise_tau")? {
                a.noise_tau = t as f32;
            }
        }
        if set("batch_size") {
            if let Some(n) = self
                .uint("training.global_batch_size")?
                .or(self.uint("training.batch_size")?)
            {
                a.batch_size = Some(n as usize);
            }
        }
        if set("ema_decay") {
            if let Some(d) = self.num("training.ema_decay")? {
                a.ema_decay = Some(d as f32);
            }
        }
        if set("clip") {
            if let Some(c) = self.num("training.clip_grad")? {
                a.clip = Some(c as f32);
            }
        }
        if set("seed") {
            if let Some(s) = self.uint("training.global_seed")? {
                a.seed = s;
            }
        }
        if set("log_every") {
            if let Some(n) = self
                .uint("training.log_interval")?
                .or(self.uint("training.log_every")?)
            {
                a.log_every = n;
            }
        }
        if set("sample_every") {
            if let Some(n) = self.uint("training.sample_every")? {
                a.sample_every = n;
            }
        }
        if set("sample_steps") {
            if let Some(n) = self.uint("sampler.params.num_steps")? {
                a.sample_steps = n as usize;
            }
        }
        if set("sample_cfg") && self.autoguidance()? == Some(false) {
            if let Some(w) = self
                .num("training.cfg_scale")?
                .or(self.num("guidance.scale")?)
            {
                a.sample_cfg = Some(w as f32);
            }
        }
        let mut plan = self.train_plan()?;
        if explicit("model") {
            plan.dit = None;
        }
        a.plan = Some(plan);
        Ok(notes)
    }

    /// Writes the config's settings into `sample`'s arguments (flags in `explicit` win) and
    /// returns the lines to show the user.
    pub fn apply_sample(
        &self,
        a: &mut SampleArgs,
        explicit: &dyn Fn(&str) -> bool,
    ) -> CliResult<Vec<String>> {
        let mut notes = self.notes()?;
        self.check_transport()?;
        self.apply_stage1(&mut a.rae, explicit, &mut notes)?;
        let set = |name: &str| !explicit(name);
        if set("ckpt") {
            if let Some(raw) = self.string("stage_2.ckpt")? {
                a.ckpt = Some(self.resolve("stage_2.ckpt", &raw)?);
            }
        }
        if set("sampler") {
            if let Some(s) = self.sampler_name()? {
                a.sampler = s;
            }
        }
        if set("steps") {
            if let Some(n) = self.uint("sampler.params.num_steps")? {
                a.steps = n as usize;
            }
        }
        if set("shift_base") {
            if let Some(s) = self.uint("misc.time_dist_shift_base")? {
                a.shift_base = Some(s as usize);
            }
        }
        let ag = self.autoguidance()?;
        if set("cfg_scale") {
            if let Some(w) = self.num("guidance.scale")? {
                a.cfg_scale = Some(w as f32);
            }
        }
        if set("cfg_interval") {
            if let Some(i) = self.guidance_interval()? {
                a.cfg_interval = i;
            }
        }
        let mut guide = None;
        if ag == Some(true) {
            if !self.has("guidance.guidance_model") && a.guidance_model.is_none() {
                return Err(self.err(
                    "guidance.guidance_model",
                    "autoguidance needs a guide model (guidance_model with params and ckpt) or --guidance-model",
                ));
            }
            if set("guidance_model") {
                if let Some(raw) = self.string("guidance.guidance_model.ckpt")? {
                    a.guidance_model = Some(self.resolve("guidance.guidance_model.ckpt", &raw)?);
                }
            }
            guide = self.dit_config("guidance.guidance_model.params")?;
        }
        let mut plan = SamplePlan {
            source: self.source(),
            dit: self.dit_config("stage_2.params")?,
            guide,
        };
        if let (Some(d), Some(n)) = (&plan.dit, self.uint("misc.num_classes")?) {
            if d.num_classes as u64 != n {
                notes.push(format!(
                    "config {}: misc.num_classes {n} differs from stage_2.params.num_classes {}",
                    self.source(),
                    d.num_classes
                ));
            }
        }
        if explicit("model") {
            plan.dit = None;
            plan.guide = None;
        }
        a.plan = Some(plan);
        Ok(notes)
    }
}
