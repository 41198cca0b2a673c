//! The resumable state of a training run: RNG stream positions and the conversion of
//! model, EMA and optimiser state to named host tensors (a checkpoint).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{streams, Optimizer};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::{load_module, save_module, HostTensor, HostTensors, Module};
use crate::optim::{AdamW, Ema};
use crate::rng::PhiloxStream;

/// Positions of every random stream of a run; saving and restoring them makes a resumed run
/// draw exactly what an uninterrupted one would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RngState {
    /// Flow times.
    pub time: PhiloxStream,
    /// Label dropout.
    pub label_drop: PhiloxStream,
    /// Flow noise (device fills).
    pub noise: PhiloxStream,
    /// Decoder-training noise levels.
    pub token_level: PhiloxStream,
    /// Decoder-training noise (device fills).
    pub token_noise: PhiloxStream,
    /// Data order and augmentation.
    pub data: PhiloxStream,
    /// DiffAug's uniforms before the stage-1 discriminator (§2.7.6).
    pub diffaug: PhiloxStream,
}

impl RngState {
    /// All streams of `seed` at position 0.
    pub fn new(seed: u64) -> Self {
        RngState {
            time: PhiloxStream::new(seed, streams::TIME),
            label_drop: PhiloxStream::new(seed, streams::LABEL_DROP),
            noise: PhiloxStream::new(seed, streams::NOISE),
            token_level: PhiloxStream::new(seed, streams::TOKEN_LEVEL),
            token_noise: PhiloxStream::new(seed, streams::TOKEN_NOISE),
            data: PhiloxStream::new(seed, streams::DATA),
            diffaug: PhiloxStream::new(seed, streams::DIFFAUG),
        }
    }

    fn all(&self) -> [(&'static str, &PhiloxStream); 7] {
        [
            ("time", &self.time),
            ("label_drop", &self.label_drop),
            ("noise", &self.noise),
            ("token_level", &self.token_level),
            ("token_noise", &self.token_noise),
            ("data", &self.data),
            ("diffaug", &self.diffaug),
        ]
    }

    /// `"seed"` and `"rng.<stream>"` position entries as strings (checkpoint metadata).
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut v = alloc::vec![(String::from("seed"), self.time.key.seed.to_string())];
        for (name, s) in self.all() {
            v.push((format!("rng.{name}"), s.position.to_string()));
        }
        v
    }

    /// Restores from [`RngState::to_metadata`] entries.
    pub fn from_metadata(meta: &[(String, String)], source: &str) -> Result<Self> {
        let get = |k: &str| -> Result<u64> {
            let v = meta
                .iter()
                .find(|(n, _)| n == k)
                .ok_or_else(|| Error::format(source, format!("checkpoint metadata lacks {k:?}")))?;
            v.1.parse::<u64>().map_err(|_| {
                Error::format(
                    source,
                    format!("checkpoint metadata {k:?} = {:?} is not an integer", v.1),
                )
            })
        };
        let mut s = RngState::new(get("seed")?);
        s.time.position = get("rng.time")?;
        s.label_drop.position = get("rng.label_drop")?;
        s.noise.position = get("rng.noise")?;
        s.token_level.position = get("rng.token_level")?;
        s.token_noise.position = get("rng.token_noise")?;
        s.data.position = get("rng.data")?;
        // Absent in checkpoints written before the GAN objective existed: unused there.
        if meta.iter().any(|(n, _)| n == "rng.diffaug") {
            s.diffaug.position = get("rng.diffaug")?;
        }
        Ok(s)
    }
}

/// A training checkpoint in host memory: model tensors under their names, the EMA under
/// `ema.`, AdamW moments under `opt.m.` / `opt.v.`, and metadata (step, RNG positions,
/// caller-supplied entries such as the full configuration).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainCheckpoint {
    /// All tensors.
    pub tensors: HostTensors,
    /// String metadata.
    pub metadata: Vec<(String, String)>,
}

impl TrainCheckpoint {
    /// Captures `model`, `opt` and `rng`, plus `extra` metadata.
    pub fn capture<B: Backend, M: Module<B> + Clone>(
        b: &B,
        model: &M,
        opt: &Optimizer<B>,
        rng: &RngState,
        extra: &[(String, String)],
    ) -> Result<Self> {
        let mut tensors = save_module(b, model)?;
        let ema = opt.ema_model(model)?;
        for (n, t) in save_module(b, &ema)?.iter() {
            tensors.insert(format!("ema.{n}"), t.clone());
        }
        let mut names = Vec::new();
        model.visit(&mut |p| {
            if p.trainable() {
                names.push((p.name.clone(), p.value.dims().to_vec()));
            }
        });
        for (kind, moments) in [
            ("m", opt.adamw.first_moments()),
            ("v", opt.adamw.second_moments()),
        ] {
            for ((n, dims), t) in names.iter().zip(moments) {
                tensors.insert(
                    format!("opt.{kind}.{n}"),
                    HostTensor::new(dims.clone(), b.download(t)?)?,
                );
            }
        }
        let mut metadata = alloc::vec![(String::from("step"), opt.step().to_string())];
        metadata.extend(rng.to_metadata());
        metadata.extend(extra.iter().cloned());
        Ok(TrainCheckpoint { tensors, metadata })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Restores `model`, the optimiser (with `config`) and the RNG state from this
    /// checkpoint; `source` names the file in errors.
    pub fn restore<B: Backend, M: Module<B> + Clone>(
        &self,
        b: &B,
        model: &mut M,
        config: super::OptimizerConfig,
        model_name: &str,
        source: &str,
    ) -> Result<(Optimizer<B>, RngState)> {
        let model_only = self.model_tensors();
        load_module(b, model, &model_only, model_name, &[], false)?;
        let mut ema_model = model.clone();
        load_module(
            b,
            &mut ema_model,
            &self.tensors.sub("ema."),
            model_name,
            &[],
            false,
        )?;
        let step: u64 = self
            .meta("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::format(source, "checkpoint metadata lacks a valid \"step\""))?;
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        let mut err = None;
        model.visit(&mut |p| {
            if !p.trainable() || err.is_some() {
                return;
            }
            for (kind, out) in [("m", &mut ms), ("v", &mut vs)] {
                let key = format!("opt.{kind}.{}", p.name);
                match self.tensors.get(&key) {
                    Some(t) if t.data.len() == p.value.numel() => {
                        match b.upload(&t.data, p.value.dims()) {
                            Ok(x) => out.push(x),
                            Err(e) => err = Some(e),
                        }
                    }
                    Some(_) => {
                        err = Some(Error::format(
                            source,
                            format!("optimizer tensor {key} has the wrong size"),
                        ))
                    }
                    None => {
                        err = Some(Error::format(
                            source,
                            format!("checkpoint lacks optimizer tensor {key}"),
                        ))
                    }
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let adamw = AdamW::from_state(config.adamw, step, ms, vs)?;
        let ema = Ema::new(&super::all_params(&ema_model), config.ema_decay)?;
        let rng = RngState::from_metadata(&self.metadata, source)?;
        Ok((Optimizer { config, adamw, ema }, rng))
    }

    /// The model's own tensors (no `ema.` / `opt.` entries).
    pub fn model_tensors(&self) -> HostTensors {
        let mut out = HostTensors::new();
        for (n, t) in self.tensors.iter() {
            if !n.starts_with("ema.") && !n.starts_with("opt.") {
                out.insert(n, t.clone());
            }
        }
        out
    }

    /// The EMA weights (for sampling).
    pub fn ema_tensors(&self) -> HostTensors {
        self.tensors.sub("ema.")
    }
}
