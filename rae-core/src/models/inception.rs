//! The Inception-v3 feature extractor of FID, IS, sFID and precision/recall: torch-fidelity's
//! `inception-v3-compat` (`FeatureExtractorInceptionV3`, the same network as pytorch-fid's
//! FID Inception), inference only, on any [`Backend`].
//!
//! Input: uint8 RGB images `[n, 3, h, w]` of any size, made f32, resized to 299×299 with the
//! TensorFlow 1.x bilinear resize and mapped to `(x − 128)/128` ([`resize`], host side).
//! Network: the stem (`Conv2d_1a_3x3` … `Conv2d_4a_3x3` with two 3×3/2 max pools), the mixed
//! blocks `Mixed_5b` … `Mixed_7c` ([`blocks`]), global average pooling and `fc`. Every
//! `BasicConv2d`'s batch norm (eps 0.001, running statistics) is folded into its conv at
//! load time. Outputs ([`InceptionOut`]):
//!
//! * `pool` `[n, 2048]`: torch-fidelity's `2048` (TF `pool_3`), for FID, KID, precision/recall;
//! * `logits` `[n, 1008]`: `logits_unbiased`, `pool · fcᵀ` without the fc bias — what
//!   torch-fidelity's IS and ADM's evaluator (its softmax graph is a bias-free matmul on
//!   `pool_3`) use; [`InceptionV3::add_fc_bias`] gives torch-fidelity's `logits`;
//! * `spatial` `[n, 2023]`: sFID's features. ADM's evaluator reads the TF graph's
//!   `mixed_6/conv:0`, the ReLU output of the 1×1 branch of the TF block `mixed_6` — the
//!   seventh mixed block, PyTorch `Mixed_6d.branch1x1` (torch-fidelity's weight converter
//!   maps `mixed_6/conv` there) — `[n, 17, 17, 192]` in TF's NHWC layout, keeps channels
//!   `[..., :7]` and flattens: index `(y·17 + x)·7 + c`. That layout is kept here so that
//!   statistics match ADM's reference batches (the first 7 channels of `Mixed_6d`'s output
//!   are those of its 1×1 branch, which the concatenation puts first).

pub mod blocks;
pub mod resize;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Pool2d, Reduce};
use crate::error::{Error, Result};
use crate::nn::{HostTensors, Module, Param};
use crate::shape::Shape;
use crate::tensor::Tensor;
use blocks::{pool, ConvBn, ConvDef, Kind, Mixed};

/// The side the extractor resizes every image to.
pub const INPUT_SIDE: usize = 299;
/// Width of the pooled features.
pub const POOL_DIM: usize = 2048;
/// Classes of the fc layer (1000 ImageNet classes + 8 unused).
pub const NUM_LOGITS: usize = 1008;
/// Channels of `mixed_6/conv` that sFID keeps.
pub const SPATIAL_CHANNELS: usize = 7;
/// Side of the 17×17 grid of the `Mixed_6*` blocks at input 299.
pub const SPATIAL_SIDE: usize = 17;
/// Width of the spatial features: 7·17·17.
pub const SPATIAL_DIM: usize = SPATIAL_CHANNELS * SPATIAL_SIDE * SPATIAL_SIDE;
/// The block whose 1×1 branch is TF's `mixed_6/conv`.
pub const SPATIAL_BLOCK: &str = "Mixed_6d";

/// What one forward gives, all on the device.
#[derive(Debug, Clone)]
pub struct InceptionOut<B: Backend> {
    /// `[n, 2048]` pooled features.
    pub pool: Tensor<B>,
    /// `[n, 1008]` logits without the fc bias (`logits_unbiased`).
    pub logits: Tensor<B>,
    /// `[n, 2023]` sFID features (`mixed_6/conv`, 7 channels, NHWC order).
    pub spatial: Tensor<B>,
}

/// The stem layers, in order (max pools after the third and the fifth).
fn stem_defs() -> Vec<ConvDef> {
    let c = |name: &str, cin, cout, k, s, p| ConvDef {
        name: String::from(name),
        cin,
        cout,
        k: (k, k),
        s: (s, s),
        p: (p, p),
    };
    vec![
        c("Conv2d_1a_3x3", 3, 32, 3, 2, 0),
        c("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
        c("Conv2d_2b_3x3", 32, 64, 3, 1, 1),
        c("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
        c("Conv2d_4a_3x3", 80, 192, 3, 1, 0),
    ]
}

/// The mixed blocks: name, kind, input channels.
fn block_plan() -> Vec<(&'static str, Kind, usize)> {
    vec![
        ("Mixed_5b", Kind::A { pool: 32 }, 192),
        ("Mixed_5c", Kind::A { pool: 64 }, 256),
        ("Mixed_5d", Kind::A { pool: 64 }, 288),
        ("Mixed_6a", Kind::B, 288),
        ("Mixed_6b", Kind::C { c7: 128 }, 768),
        ("Mixed_6c", Kind::C { c7: 160 }, 768),
        ("Mixed_6d", Kind::C { c7: 160 }, 768),
        ("Mixed_6e", Kind::C { c7: 192 }, 768),
        ("Mixed_7a", Kind::D, 768),
        ("Mixed_7b", Kind::E { max_pool: false }, 1280),
        ("Mixed_7c", Kind::E { max_pool: true }, 2048),
    ]
}

/// Every tensor of the pretrained state dict (`pt_inception-2015-12-05-6726825d.pth`,
/// torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`) with its shape, in
/// network order; `num_batches_tracked` counters, if present, are not needed.
pub fn checkpoint_layout() -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |defs: &[ConvDef]| {
        for d in defs {
            out.extend(d.tensors());
        }
    };
    add(&stem_defs());
    for (name, kind, cin) in block_plan() {
        add(&blocks::mixed_defs(name, kind, cin).0);
    }
    out.push((String::from("fc.weight"), vec![NUM_LOGITS, POOL_DIM]));
    out.push((String::from("fc.bias"), vec![NUM_LOGITS]));
    out
}

/// The FID Inception-v3 with its batch norms folded.
#[derive(Debug, Clone)]
pub struct InceptionV3<B: Backend> {
    /// `Conv2d_1a_3x3` … `Conv2d_4a_3x3`.
    pub stem: Vec<ConvBn<B>>,
    /// `Mixed_5b` … `Mixed_7c`.
    pub blocks: Vec<(String, Mixed<B>)>,
    /// `fc.weight` `[1008, 2048]`.
    pub fc_weight: Param<B>,
    /// `fc.bias` `[1008]` (unused by the outputs; see [`InceptionV3::add_fc_bias`]).
    pub fc_bias: Param<B>,
}

impl<B: Backend> InceptionV3<B> {
    /// Builds the network from the pretrained state dict's tensors. Every missing tensor is
    /// listed in one error, a wrong shape names the tensor and both shapes, non-finite values
    /// name the tensor, and float tensors the network does not have are an error (integer
    /// `num_batches_tracked` counters are not float tensors and are never looked at).
    pub fn from_tensors(b: &B, src: &HostTensors) -> Result<Self> {
        check_tensors(src)?;
        let stem = stem_defs()
            .iter()
            .map(|d| ConvBn::load(b, src, d))
            .collect::<Result<Vec<_>>>()?;
        let mut blocks = Vec::new();
        for (name, kind, cin) in block_plan() {
            let convs = blocks::mixed_defs(name, kind, cin)
                .0
                .iter()
                .map(|d| ConvBn::load(b, src, d))
                .collect::<Result<Vec<_>>>()?;
            blocks.push((String::from(name), Mixed { kind, convs }));
        }
        let get = |n: &str, dims: &[usize]| -> Result<Tensor<B>> {
            let t = src
                .get(n)
                .ok_or_else(|| Error::invalid("FID Inception", format!("no tensor {n}")))?;
            b.upload(&t.data, dims)
        };
        Ok(InceptionV3 {
            stem,
            blocks,
            fc_weight: Param::buffer("fc.weight", get("fc.weight", &[NUM_LOGITS, POOL_DIM])?),
            fc_bias: Param::buffer("fc.bias", get("fc.bias", &[NUM_LOGITS])?),
        })
    }

    /// The features of uint8 RGB images `[n, 3, h, w]` (row-major bytes): the input
    /// handling of [`resize::preprocess_u8`], then [`InceptionV3::forward`].
    pub fn extract_u8(
        &self,
        b: &B,
        images: &[u8],
        n: usize,
        hw: (usize, usize),
    ) -> Result<InceptionOut<B>> {
        let x = resize::preprocess_u8(images, n, hw, INPUT_SIDE)?;
        let x = b.upload(&x, &[n, 3, INPUT_SIDE, INPUT_SIDE])?;
        self.forward(b, &x)
    }

    /// The network on preprocessed input `x` `[n, 3, 299, 299]` (values `(v − 128)/128`).
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<InceptionOut<B>> {
        let want = [
            x.dims().first().copied().unwrap_or(0),
            3,
            INPUT_SIDE,
            INPUT_SIDE,
        ];
        if x.dims() != want {
            return Err(Error::shape(
                "FID Inception input",
                &Shape::new(&want)?,
                x.shape(),
            ));
        }
        let n = want[0];
        let mut h = x.clone();
        for (i, c) in self.stem.iter().enumerate() {
            h = c.forward(b, &h)?;
            if i == 2 || i == 4 {
                h = pool(b, &h, 3, 2, 0, Pool2d::Max)?;
            }
        }
        let mut spatial = None;
        for (name, m) in &self.blocks {
            h = m.forward(b, &h)?;
            if name == SPATIAL_BLOCK {
                spatial = Some(spatial_features(b, &h)?);
            }
        }
        let spatial =
            spatial.ok_or_else(|| Error::invalid("FID Inception", "no Mixed_6d block"))?;
        let d = h.dims().to_vec();
        let pooled = b
            .reduce(Reduce::Mean, &h, [d[0] * d[1], d[2] * d[3], 1])?
            .reshape(&[n, POOL_DIM])?;
        let logits = b.matmul(&pooled, &self.fc_weight.value, false, true)?;
        Ok(InceptionOut {
            pool: pooled,
            logits,
            spatial,
        })
    }

    /// torch-fidelity's `logits` (`logits_unbiased` plus the fc bias), `[n, 1008]`.
    pub fn add_fc_bias(&self, b: &B, logits: &Tensor<B>) -> Result<Tensor<B>> {
        let n = logits.numel() / NUM_LOGITS;
        b.bcast_affine(logits, None, Some(&self.fc_bias.value), [n, NUM_LOGITS, 1])
    }
}

/// The first 7 channels of `Mixed_6d`'s output `[n, 768, 17, 17]` (its 1×1 branch), as TF's
/// NHWC `mixed_6/conv[..., :7]` flattened: `[n, 17·17·7]`.
fn spatial_features<B: Backend>(b: &B, h: &Tensor<B>) -> Result<Tensor<B>> {
    let d = h.dims();
    let (n, c, hw) = (d[0], d[1], d[2] * d[3]);
    if hw != SPATIAL_SIDE * SPATIAL_SIDE {
        return Err(Error::bad_shape(
            "FID Inception spatial features",
            h.shape(),
            "expected a 17×17 grid",
        ));
    }
    let first = b.slice_mid(h, [n, c, hw], 0, SPATIAL_CHANNELS)?;
    b.permute0213(&first.reshape(&[n, SPATIAL_CHANNELS, hw, 1])?)?
        .reshape(&[n, SPATIAL_DIM])
}

/// Checks names, shapes and values of the state dict against [`checkpoint_layout`].
fn check_tensors(src: &HostTensors) -> Result<()> {
    let layout = checkpoint_layout();
    let mut missing = Vec::new();
    for (name, dims) in &layout {
        match src.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.shape != *dims => {
                return Err(Error::TensorShape {
                    name: name.clone(),
                    expected: Shape::new(dims)?,
                    got: Shape::new(&t.shape)?,
                })
            }
            Some(t) => {
                if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(
                        format!("FID Inception: tensor {name}"),
                        format!("holds a non-finite value ({}) at index {bad}", t.data[bad]),
                    ));
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::MissingTensors {
            model: String::from("FID Inception-v3"),
            names: missing,
        });
    }
    let known: alloc::collections::BTreeSet<&str> =
        layout.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&str> = src.names().filter(|n| !known.contains(n)).collect();
    if !extra.is_empty() {
        return Err(Error::config(
            "FID Inception-v3",
            format!(
                "the checkpoint has {} tensors this network does not have (is it another Inception, e.g. torchvision's with AuxLogits?): {}",
                extra.len(),
                extra.iter().take(8).copied().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

impl<B: Backend> Module<B> for InceptionV3<B> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        self.stem.visit(f);
        for (_, m) in &self.blocks {
            m.visit(f);
        }
        f(&self.fc_weight);
        f(&self.fc_bias);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        self.stem.visit_mut(f);
        for (_, m) in &mut self.blocks {
            m.visit_mut(f);
        }
        f(&mut self.fc_weight);
        f(&mut self.fc_bias);
    }
}
