//! Layers with explicit forward and backward (docs/architecture.md).
//!
//! A layer is a struct of [`Param`]s. `forward` returns the output and whatever the
//! backward needs (`Saved`); `backward` takes that, the output gradient and a [`Grads`]
//! map, adds the parameter gradients under the parameters' checkpoint names and returns
//! the input gradient. Models compose layers forward in order and backward in reverse; there
//! is no tape.

mod attention;
mod block_dit;
mod block_vit;
mod conv;
mod conv1d;
mod embed;
mod init;
mod linear;
mod mlp;
mod norm;
mod resize;
mod store;
pub mod tables;

pub use attention::{AttentionSaved, FusedAttention, SeparateAttention};
pub use block_dit::{DitBlock, DitBlockSaved, FinalLayer, FinalLayerSaved};
pub use block_vit::{VitBlock, VitBlockConfig, VitBlockSaved, VitNames};
pub use conv::{
    avg_pool2d, conv2d, conv2d_backward, conv2d_backward_with, conv2d_input_grad,
    conv2d_input_grad_with, conv2d_with, max_pool2d, Conv2d, ConvGrads, ConvSplit,
};
pub use conv1d::{conv1d_circular, conv1d_circular_backward};
pub use embed::{labels_from_i64, LabelEmbedder, PatchEmbed, TimestepEmbedder, TimestepSaved};
pub use init::Init;
pub use linear::Linear;
pub use mlp::{Mlp, MlpSaved, SwiGlu, SwiGluSaved};
pub use norm::{LayerNorm, RmsNorm};
pub use resize::{bilinear_matrix, Bilinear};
pub use store::{load_module, save_module, HostTensor, HostTensors, LoadReport};

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::{Backend, Binary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Whether a parameter is trained or a frozen buffer (position tables, Fourier
/// frequencies, RoPE tables, the unused DINOv2 mask token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Updated by the optimiser; receives gradients.
    Trainable,
    /// Loaded and saved, never trained.
    Buffer,
}

/// A named tensor of a model; the name is the reference checkpoint key.
#[derive(Debug, Clone)]
pub struct Param<B: Backend> {
    /// Checkpoint name, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// The value.
    pub value: Tensor<B>,
    /// Trained or frozen.
    pub kind: ParamKind,
}

impl<B: Backend> Param<B> {
    /// A trainable parameter.
    pub fn new(name: impl Into<String>, value: Tensor<B>) -> Self {
        Param {
            name: name.into(),
            value,
            kind: ParamKind::Trainable,
        }
    }

    /// A frozen buffer.
    pub fn buffer(name: impl Into<String>, value: Tensor<B>) -> Self {
        Param {
            name: name.into(),
            value,
            kind: ParamKind::Buffer,
        }
    }

    /// Whether the parameter receives gradients.
    pub fn trainable(&self) -> bool {
        self.kind == ParamKind::Trainable
    }
}

/// Something made of parameters: layers and models.
///
/// Write-backs never rely on the two visits agreeing in order: [`load_module`] and
/// [`crate::train::set_params`] (and through it the optimiser and the EMA copy) match
/// parameters by name. Implement both methods with [`module_params!`](crate::module_params)
/// from one list of fields, so they list the same parameters in the same order anyway.
pub trait Module<B: Backend> {
    /// Calls `f` on every parameter, in a fixed order (the order of [`save_module`], of the
    /// optimiser's moments and of the EMA).
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>));
    /// Calls `f` on every parameter mutably: the same parameters as [`Module::visit`] (by
    /// name); writers match them by name, so the order does not matter.
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>));

    /// Number of scalar values over all parameters (`trainable_only` skips buffers).
    fn num_params(&self, trainable_only: bool) -> usize {
        let mut n = 0;
        self.visit(&mut |p| {
            if !trainable_only || p.trainable() {
                n += p.value.numel();
            }
        });
        n
    }

    /// Names of all parameters, in visiting order.
    fn param_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.visit(&mut |p| v.push(p.name.clone()));
        v
    }
}

/// Implements [`Module::visit`] and [`Module::visit_mut`] inside an
/// `impl<B: Backend> Module<B> for T` block from one list of fields, each itself a
/// [`Module`] (a [`Param`], a layer, or an `Option` or `Vec` of them), visited in the listed
/// order by both methods, so the two cannot drift apart. The impl's backend parameter must be
/// called `B`.
///
/// ```
/// use rae_core::nn::{Linear, Param};
/// use rae_core::Backend;
///
/// struct Head<B: Backend> {
///     scale: Param<B>,
///     proj: Linear<B>,
/// }
///
/// impl<B: Backend> rae_core::nn::Module<B> for Head<B> {
///     rae_core::module_params!(scale, proj);
/// }
/// ```
#[macro_export]
macro_rules! module_params {
    ($($field:ident),+ $(,)?) => {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a $crate::nn::Param<B>)) {
            $($crate::nn::Module::visit(&self.$field, f);)+
        }
        fn visit_mut(&mut self, f: &mut dyn FnMut(&mut $crate::nn::Param<B>)) {
            $($crate::nn::Module::visit_mut(&mut self.$field, f);)+
        }
    };
}

impl<B: Backend> Module<B> for Param<B> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        f(self)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(self)
    }
}

impl<B: Backend, M: Module<B>> Module<B> for Option<M> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        if let Some(m) = self {
            m.visit(f)
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        if let Some(m) = self {
            m.visit_mut(f)
        }
    }
}

impl<B: Backend, M: Module<B>> Module<B> for Vec<M> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        for m in self {
            m.visit(f)
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        for m in self {
            m.visit_mut(f)
        }
    }
}

/// Parameter gradients by checkpoint name; gradients for the same name add up.
#[derive(Debug, Clone)]
pub struct Grads<B: Backend> {
    map: BTreeMap<String, Tensor<B>>,
}

impl<B: Backend> Default for Grads<B> {
    fn default() -> Self {
        Grads {
            map: BTreeMap::new(),
        }
    }
}

impl<B: Backend> Grads<B> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `g` to the gradient of `p` (when `p` is trainable), reshaped to `p`'s shape.
    pub fn add(&mut self, b: &B, p: &Param<B>, g: Tensor<B>) -> Result<()> {
        if !p.trainable() {
            return Ok(());
        }
        let g = g.reshape(p.value.dims())?;
        let entry = match self.map.remove(&p.name) {
            Some(prev) => b.binary(Binary::Add, &prev, &g)?,
            None => g,
        };
        self.map.insert(p.name.clone(), entry);
        Ok(())
    }

    /// The gradient of the parameter named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor<B>> {
        self.map.get(name)
    }

    /// All gradients, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor<B>)> {
        self.map.iter()
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no gradient was recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Adds two optional tensors (an absent one counts as zero).
pub(crate) fn add_opt<B: Backend>(
    b: &B,
    acc: Option<Tensor<B>>,
    x: Tensor<B>,
) -> Result<Option<Tensor<B>>> {
    Ok(Some(match acc {
        Some(a) => b.binary(Binary::Add, &a, &x)?,
        None => x,
    }))
}
