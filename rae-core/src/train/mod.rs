//! Training steps for both stages (§5, §2.7), generic over the backend: the optimiser
//! plumbing shared by both ([`Optimizer`]: clipping, AdamW, schedule, EMA), the stage-2
//! flow-matching step on DiT-DH (§7.3) and the stage-1 decoder step on noise-augmented
//! latents with the L1 loss (§2.5, §2.7.2), plus the checkpointable state of a run; each
//! stage as a [`Trainer`] driven by the one training loop, [`run`].

mod optimizer;
mod stage1;
mod stage2;
mod state;
mod trainer;

pub use optimizer::{Optimizer, OptimizerConfig, StepReport};
pub use stage1::{stage1_step, stage1_step_reduced, Stage1Config, Stage1Trainer};
pub use stage2::{stage2_step, stage2_step_reduced, Stage2Config, Stage2Trainer};
pub use state::{RngState, TrainCheckpoint};
pub use trainer::{run, GradHook, LoopHooks, NoReduce, RunState, StepOutcome, Trainer};

use alloc::vec::Vec;

use crate::backend::Backend;
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
}

/// The trainable parameters of `m`, in visiting order.
pub fn trainable_params<B: Backend, M: Module<B>>(m: &M) -> Vec<Tensor<B>> {
    let mut v = Vec::new();
    m.visit(&mut |p| {
        if p.trainable() {
            v.push(p.value.clone());
        }
    });
    v
}

/// All parameters (buffers too), in visiting order: what the EMA averages (§5.1).
pub fn all_params<B: Backend, M: Module<B>>(m: &M) -> Vec<Tensor<B>> {
    let mut v = Vec::new();
    m.visit(&mut |p| v.push(p.value.clone()));
    v
}

/// Writes `values` into the parameters of `m` selected by `trainable_only`, in visiting
/// order (the inverse of [`trainable_params`] / [`all_params`]).
pub fn set_params<B: Backend, M: Module<B>>(m: &mut M, values: &[Tensor<B>], trainable_only: bool) {
    let mut it = values.iter();
    m.visit_mut(&mut |p| {
        if !trainable_only || p.trainable() {
            if let Some(v) = it.next() {
                p.value = v.clone();
            }
        }
    });
}
