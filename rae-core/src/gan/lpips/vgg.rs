//! The VGG feature extractor of LPIPS: blocks of 3×3 convolutions (padding 1) with ReLU,
//! 2×2 max pooling between blocks, and a tap after each block's last ReLU (VGG-16:
//! relu1_2, relu2_2, relu3_3, relu4_3, relu5_3). Frozen: the backward gives the input
//! gradient only.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Pool2d, Unary, Window2d};
use crate::error::{Error, Result};
use crate::nn::{conv2d, conv2d_input_grad, max_pool2d, Conv2d, HostTensors, Module, Param};
use crate::tensor::Tensor;

/// The widths of the convolutions, block by block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VggConfig {
    /// `blocks[i][j]`: output channels of conv `j` of block `i`.
    pub blocks: Vec<Vec<usize>>,
}

impl VggConfig {
    /// VGG-16's features up to relu5_3.
    pub fn vgg16() -> Self {
        VggConfig {
            blocks: vec![
                vec![64, 64],
                vec![128, 128],
                vec![256, 256, 256],
                vec![512, 512, 512],
                vec![512, 512, 512],
            ],
        }
    }

    /// A small VGG of the same structure (tests and the built-in demo run).
    pub fn tiny() -> Self {
        VggConfig {
            blocks: vec![
                vec![4, 4],
                vec![8, 8],
                vec![8, 8, 8],
                vec![16, 16, 16],
                vec![16, 16, 16],
            ],
        }
    }

    /// The layout of a VGG state dict (torchvision's `features.{i}.weight` names, or the
    /// `lpips` package's `net.slice{k}.{i}.weight`): consecutive convolutions two indices
    /// apart share a block, a gap of three is a pool between blocks.
    pub fn from_tensors(src: &HostTensors) -> Result<Self> {
        let mut convs: Vec<(usize, usize)> = src
            .iter()
            .filter_map(|(n, t)| {
                let n = n.strip_prefix("module.").unwrap_or(n);
                let rest = n.strip_prefix("features.").or_else(|| {
                    let r = n.strip_prefix("net.slice")?;
                    r.split_once('.').map(|(_, r)| r)
                })?;
                let (i, what) = rest.split_once('.')?;
                let i = i.parse::<usize>().ok()?;
                (what == "weight" && t.shape.len() == 4).then_some((i, t.shape[0]))
            })
            .collect();
        convs.sort_unstable();
        convs.dedup();
        if convs.first().map(|c| c.0) != Some(0) {
            return Err(Error::invalid(
                "VGG weights",
                String::from("no `features.0.weight` (torchvision's VGG-16 names expected)"),
            ));
        }
        let mut blocks: Vec<Vec<usize>> = Vec::new();
        let mut prev: Option<usize> = None;
        for (i, o) in convs {
            match (prev, blocks.last_mut()) {
                (Some(p), Some(blk)) if i == p + 2 => blk.push(o),
                (Some(p), _) if i != p + 3 => {
                    return Err(Error::invalid(
                        "VGG weights",
                        format!("convolution features.{i} follows features.{p}: not a VGG layout"),
                    ))
                }
                _ => blocks.push(vec![o]),
            }
            prev = Some(i);
        }
        // LPIPS taps five blocks (relu1_2 … relu5_3); a full VGG-16 file has exactly those
        // convolutions in `features`.
        Ok(VggConfig { blocks })
    }

    /// Channels at each tap.
    pub fn tap_channels(&self) -> Vec<usize> {
        self.blocks
            .iter()
            .map(|b| b.last().copied().unwrap_or(0))
            .collect()
    }

    /// torchvision's `features` index of each convolution, block by block (a conv and its
    /// ReLU take two indices, the pool after a block one).
    pub fn feature_indices(&self) -> Vec<Vec<usize>> {
        let mut idx = 0;
        self.blocks
            .iter()
            .map(|blk| {
                let v: Vec<usize> = (0..blk.len()).map(|j| idx + 2 * j).collect();
                idx += 2 * blk.len() + 1;
                v
            })
            .collect()
    }
}

/// The frozen VGG features.
#[derive(Debug, Clone)]
pub struct Vgg<B: Backend> {
    /// The layout.
    pub config: VggConfig,
    /// Convolutions `features.{i}` in order.
    pub convs: Vec<Conv2d<B>>,
}

/// The activations the input gradient needs: each convolution's input and its ReLU's
/// output.
#[derive(Debug, Clone)]
pub struct VggSaved<B: Backend> {
    inputs: Vec<Tensor<B>>,
    outputs: Vec<Tensor<B>>,
}

const POOL: (usize, usize) = (2, 2);

impl<B: Backend> Vgg<B> {
    /// A VGG of shape `config`, weights zero until [`Vgg::load`].
    pub fn new(b: &B, config: &VggConfig) -> Result<Self> {
        let mut convs = Vec::new();
        let mut c = 3;
        for (blk, ids) in config.blocks.iter().zip(config.feature_indices()) {
            for (&o, i) in blk.iter().zip(ids) {
                convs.push(Conv2d {
                    weight: Param::buffer(format!("features.{i}.weight"), b.zeros(&[o, c, 3, 3])?),
                    bias: Some(Param::buffer(format!("features.{i}.bias"), b.zeros(&[o])?)),
                    stride: (1, 1),
                    padding: (1, 1),
                });
                c = o;
            }
        }
        Ok(Vgg {
            config: config.clone(),
            convs,
        })
    }

    /// Sets every convolution from `src`: torchvision's / timm's `features.{i}.*`, with an
    /// optional `module.` or `net.` prefix, or the `lpips` package's `net.slice{k}.{i}.*`.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<()> {
        let ids = self.config.feature_indices();
        let slices: Vec<usize> = ids
            .iter()
            .enumerate()
            .flat_map(|(k, v)| v.iter().map(move |_| k + 1))
            .collect();
        let mut err = None;
        let mut j = 0usize;
        self.visit_mut(&mut |p| {
            if err.is_some() {
                return;
            }
            // `features.{i}.weight` → its suffix `{i}.weight`.
            let suffix = String::from(p.name.trim_start_matches("features."));
            let k = slices.get(j / 2).copied().unwrap_or(0);
            j += 1;
            let candidates = [
                format!("features.{suffix}"),
                format!("module.features.{suffix}"),
                format!("net.features.{suffix}"),
                format!("net.slice{k}.{suffix}"),
            ];
            let Some((name, t)) = candidates
                .iter()
                .find_map(|n| src.get(n).map(|t| (n.clone(), t)))
            else {
                err = Some(Error::invalid(
                    "VGG weights",
                    format!("no tensor `{}` (nor `net.slice{k}.{suffix}`)", p.name),
                ));
                return;
            };
            if t.shape != p.value.dims() {
                err = Some(Error::invalid(
                    "VGG weights",
                    format!(
                        "`{name}` has shape {:?}, expected {:?}",
                        t.shape,
                        p.value.dims()
                    ),
                ));
                return;
            }
            match b.upload(&t.data, &t.shape) {
                Ok(v) => p.value = v,
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// The taps of `x` `[n, 3, h, w]` (already scaled); with `keep`, what the backward needs.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        keep: bool,
    ) -> Result<(Vec<Tensor<B>>, Option<VggSaved<B>>)> {
        let mut taps = Vec::new();
        let mut saved = VggSaved {
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let mut h = x.clone();
        let mut convs = self.convs.iter();
        for (i, blk) in self.config.blocks.iter().enumerate() {
            if i > 0 {
                h = max_pool2d(b, &h, POOL, POOL, (0, 0))?;
            }
            for _ in blk {
                let conv = convs.next().ok_or_else(|| {
                    Error::invalid("VGG", String::from("fewer convolutions than the layout"))
                })?;
                let bias = conv.bias.as_ref().map(|p| &p.value);
                let y = conv2d(b, &h, &conv.weight.value, bias, conv.stride, conv.padding)?;
                let a = b.unary(Unary::Relu, &y)?;
                if keep {
                    saved.inputs.push(h);
                    saved.outputs.push(a.clone());
                }
                h = a;
            }
            taps.push(h.clone());
        }
        Ok((taps, keep.then_some(saved)))
    }

    /// The input gradient from the gradients at the taps (`dtaps[i]` has tap `i`'s shape).
    pub fn backward(&self, b: &B, s: &VggSaved<B>, dtaps: &[Tensor<B>]) -> Result<Tensor<B>> {
        if dtaps.len() != self.config.blocks.len() || s.outputs.len() != self.convs.len() {
            return Err(Error::invalid(
                "VGG backward",
                format!(
                    "{} tap gradients for {} taps",
                    dtaps.len(),
                    self.config.blocks.len()
                ),
            ));
        }
        let mut j = self.convs.len();
        let mut g: Option<Tensor<B>> = None;
        for (i, blk) in self.config.blocks.iter().enumerate().rev() {
            let last = &s.outputs[j - 1];
            let mut d = match g.take() {
                // From the next block's input: back through the pool.
                Some(gp) => {
                    let w = Window2d::nchw("VGG pool", last.dims(), POOL, POOL, (0, 0))?;
                    let dp = b.pool2d_backward(last, &gp, w, Pool2d::Max)?;
                    b.binary(crate::backend::Binary::Add, &dp, &dtaps[i])?
                }
                None => dtaps[i].clone(),
            };
            for _ in blk {
                j -= 1;
                let conv = &self.convs[j];
                d = b.unary_backward(Unary::Relu, &s.outputs[j], &d)?;
                d = conv2d_input_grad(
                    b,
                    &s.inputs[j],
                    &conv.weight.value,
                    conv.stride,
                    conv.padding,
                    &d,
                )?;
            }
            g = Some(d);
        }
        g.ok_or_else(|| Error::invalid("VGG backward", String::from("no blocks")))
    }
}

impl<B: Backend> Module<B> for Vgg<B> {
    crate::module_params!(convs);
}
