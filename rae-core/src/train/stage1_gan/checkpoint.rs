//! Checkpoints of the stage-1 GAN trainer: the decoder's entries as in every stage-1
//! checkpoint (model, `ema.`, `opt.`, step and RNG positions), plus the discriminator heads
//! with their spectral-norm vectors, EMA and AdamW moments under `disc.` and their update
//! count as `disc.step`. The frozen backbones (DINO, VGG) are not saved: they come from
//! their weight files.

use alloc::format;
use alloc::string::{String, ToString};

use super::Stage1GanTrainer;
use crate::backend::Backend;
use crate::error::Result;
use crate::nn::HostTensors;
use crate::train::TrainCheckpoint;

const PREFIX: &str = "disc.";
const STEP: &str = "disc.step";

pub(super) fn capture<B: Backend>(t: &Stage1GanTrainer<B>, b: &B) -> Result<TrainCheckpoint> {
    let s = &t.state;
    let mut ck = TrainCheckpoint::capture(b, &t.rae.decoder, &s.opt, &s.rng, &s.metadata)?;
    if let Some(ds) = &t.disc {
        let dck = TrainCheckpoint::capture(b, &ds.disc, &ds.opt, &s.rng, &[])?;
        for (n, x) in dck.tensors.iter() {
            ck.tensors.insert(format!("{PREFIX}{n}"), x.clone());
        }
        ck.metadata
            .push((String::from(STEP), ds.opt.step().to_string()));
    }
    Ok(ck)
}

pub(super) fn restore<B: Backend>(
    t: &mut Stage1GanTrainer<B>,
    b: &B,
    ck: &TrainCheckpoint,
    source: &str,
) -> Result<()> {
    let mut decoder_only = HostTensors::new();
    for (n, x) in ck.tensors.iter().filter(|(n, _)| !n.starts_with(PREFIX)) {
        decoder_only.insert(n, x.clone());
    }
    let dec = TrainCheckpoint {
        tensors: decoder_only,
        metadata: ck.metadata.clone(),
    };
    let config = t.state.opt.config.clone();
    let (opt, rng) = dec.restore(b, &mut t.rae.decoder, config, "RAE decoder", source)?;
    t.state.opt = opt;
    t.state.rng = rng;
    // A checkpoint of a run without the discriminator (or before it existed) leaves the
    // discriminator as it was built; one of a run with it and a trainer without ignores it.
    let (Some(ds), Some(step)) = (&mut t.disc, ck.meta(STEP)) else {
        return Ok(());
    };
    let mut metadata = alloc::vec![(String::from("step"), String::from(step))];
    metadata.extend(
        ck.metadata
            .iter()
            .filter(|(k, _)| k == "seed" || k.starts_with("rng."))
            .cloned(),
    );
    let sub = TrainCheckpoint {
        tensors: ck.tensors.sub(PREFIX),
        metadata,
    };
    let config = ds.opt.config.clone();
    let (opt, _) = sub.restore(b, &mut ds.disc, config, "discriminator heads", source)?;
    ds.opt = opt;
    Ok(())
}
