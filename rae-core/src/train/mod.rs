//! Training steps for both stages (§5, §2.7), generic over the backend: the optimiser
//! plumbing shared by both ([`Optimizer`]: clipping, AdamW, schedule, EMA), the stage-2
//! flow-matching step on DiT-DH (§7.3) and the stage-1 decoder step on noise-augmented
//! latents with the L1 loss (§2.5, §2.7.2), plus the checkpointable state of a run; each
//! stage as a [`Trainer`] driven by the one training loop, [`run`].

mod collective;
mod optimizer;
mod stage1;
mod stage1_gan;
mod stage2;
mod state;
mod trainer;

pub use collective::{
    broadcast_module, check_root, AverageGrads, Collective, HostCollective, HostComm, ReduceOp,
    Shard, Single, DEFAULT_BUCKET,
};
pub use optimizer::{Optimizer, OptimizerConfig, StepReport};
pub use stage1::{stage1_step, stage1_step_reduced, Stage1Config, Stage1Trainer};
pub use stage1_gan::{
    discriminator_objective, generator_objective, quantised_fake, DiscState, DiscTerms, GanConfig,
    GenTerms, Stage1GanTrainer,
};
pub use stage2::{stage2_step, stage2_step_reduced, Stage2Config, Stage2Trainer};
pub use state::{RngState, TrainCheckpoint};
pub use trainer::{run, GradHook, LoopHooks, NoReduce, RunState, StepOutcome, Trainer};

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;

/// Philox stream numbers of a training run, one per kind of randomness, so each can be
/// resumed independently from its position.
pub mod streams {
    /// Flow times (host).
    pub const TIME: u64 = 0x7100;
    /// Label dropout (host).
    pub const LABEL_DROP: u64 = 0x7101;
    /// Noise `ε` of the flow path (device fill).
    pub const NOISE: u64 = 0x7102;
    /// Per-sample latent noise levels of decoder training (host).
    pub const TOKEN_LEVEL: u64 = 0x7103;
    /// Latent noise of decoder training (device fill).
    pub const TOKEN_NOISE: u64 = 0x7104;
    /// Data order and augmentation (host, used by the data loader).
    pub const DATA: u64 = 0x7105;
    /// DiffAug's uniforms of the stage-1 GAN (host).
    pub const DIFFAUG: u64 = 0x7106;
}

/// The trainable parameters of `m`, in [`Module::visit`] order.
pub fn trainable_params<B: Backend, M: Module<B>>(m: &M) -> Vec<Tensor<B>> {
    named_params(m, true).1
}

/// All parameters (buffers too), in [`Module::visit`] order: what the EMA averages (§5.1).
pub fn all_params<B: Backend, M: Module<B>>(m: &M) -> Vec<Tensor<B>> {
    named_params(m, false).1
}

/// Names and values of the parameters of `m` (only the trainable ones when
/// `trainable_only`), in [`Module::visit`] order, gathered in one visit so the two lists
/// pair up; [`set_params`] takes them back.
pub fn named_params<B: Backend, M: Module<B>>(
    m: &M,
    trainable_only: bool,
) -> (Vec<String>, Vec<Tensor<B>>) {
    let (mut names, mut values) = (Vec::new(), Vec::new());
    m.visit(&mut |p| {
        if !trainable_only || p.trainable() {
            names.push(p.name.clone());
            values.push(p.value.clone());
        }
    });
    (names, values)
}

/// Writes `values[i]` into the parameter of `m` named `names[i]` (the inverse of
/// [`named_params`]). Parameters are matched by name, never by position, so the order in
/// which [`Module::visit`] and [`Module::visit_mut`] list them does not matter.
///
/// Every parameter selected by `trainable_only` (all of them when false) must receive exactly
/// one value of its own shape, and every name must be such a parameter; otherwise this is an
/// error naming the offenders, checked before anything is written. (A module whose
/// `visit_mut` lists other names than its `visit` can still fail half-way; that is an error
/// too.)
pub fn set_params<B: Backend, M: Module<B>>(
    m: &mut M,
    names: &[String],
    values: &[Tensor<B>],
    trainable_only: bool,
) -> Result<()> {
    const WHAT: &str = "set_params";
    if names.len() != values.len() {
        return Err(Error::invalid(
            WHAT,
            format!("{} names for {} values", names.len(), values.len()),
        ));
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        if index.insert(n.as_str(), i).is_some() {
            return Err(Error::invalid(
                WHAT,
                format!("parameter {n} is given twice"),
            ));
        }
    }
    // Check: every selected parameter has a value of its shape, once.
    let mut problems: Vec<String> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    m.visit(&mut |p| {
        if trainable_only && !p.trainable() {
            return;
        }
        match index.get(p.name.as_str()) {
            None => problems.push(format!("no value for {}", p.name)),
            Some(&i) => {
                if !seen.insert(names[i].as_str()) {
                    problems.push(format!("the model lists {} twice", p.name));
                } else if values[i].dims() != p.value.dims() {
                    problems.push(format!(
                        "{} is {:?}, the value {:?}",
                        p.name,
                        p.value.dims(),
                        values[i].dims()
                    ));
                }
            }
        }
    });
    problems.extend(
        names
            .iter()
            .filter(|n| !seen.contains(n.as_str()))
            .map(|n| format!("no parameter {n} to receive a value")),
    );
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(8);
        return Err(Error::invalid(
            WHAT,
            format!("{total} mismatches: {}", problems.join("; ")),
        ));
    }
    // Write, again by name.
    let mut written = 0usize;
    m.visit_mut(&mut |p| {
        if trainable_only && !p.trainable() {
            return;
        }
        if let Some(&i) = index.get(p.name.as_str()) {
            if values[i].dims() == p.value.dims() {
                p.value = values[i].clone();
                written += 1;
            }
        }
    });
    if written != names.len() {
        return Err(Error::invalid(
            WHAT,
            format!(
                "wrote {written} of {} values: the module's visit_mut lists other parameters \
                 than its visit",
                names.len()
            ),
        ));
    }
    Ok(())
}
