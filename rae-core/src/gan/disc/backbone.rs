//! The frozen DINO (v1) ViT of the discriminator (§2.7.4): resize to 224, ImageNet
//! standardisation, patch embedding, CLS, position table, pre-LN blocks; returns the
//! channels-first patch-token taps. Every parameter is a frozen buffer.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::DiscConfig;
use crate::backend::{Backend, PatchOrder, Unary};
use crate::error::{Error, Result};
use crate::nn::{
    load_module, Bilinear, HostTensor, HostTensors, Init, LoadReport, Module, Param, ParamKind,
    PatchEmbed, VitBlock, VitBlockConfig, VitBlockSaved, VitNames,
};
use crate::tensor::Tensor;

/// The DINO block names, with the fused `qkv` split into `attn.q`, `attn.k`, `attn.v`.
const DINO_NAMES: VitNames = VitNames {
    norm1: "norm1",
    norm2: "norm2",
    fc: ("mlp.fc1", "mlp.fc2"),
    layer_scale: None,
    attn: ["attn.q", "attn.k", "attn.v", "attn.proj"],
};

/// `blocks.{i}.attn.qkv.{weight,bias}` for a split part `blocks.{i}.attn.{q,k,v}.*`.
fn fused_name(n: &str) -> Option<String> {
    for part in [".attn.q.", ".attn.k.", ".attn.v."] {
        if let Some((pre, suffix)) = n.split_once(part) {
            return Some(format!("{pre}.attn.qkv.{suffix}"));
        }
    }
    None
}

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The frozen DINO ViT.
#[derive(Debug, Clone)]
pub struct DinoBackbone<B: Backend> {
    /// `patch_embed.proj` (conv `[C, 3, p, p]` with bias).
    pub patch_embed: PatchEmbed<B>,
    /// `cls_token` `[1, 1, C]`.
    pub cls_token: Param<B>,
    /// `pos_embed` `[1, 1 + N, C]`.
    pub pos_embed: Param<B>,
    /// `blocks.{i}`.
    pub blocks: Vec<VitBlock<B>>,
    /// Taps after these blocks (0-based), besides the last block's output.
    pub key_depths: Vec<usize>,
    /// Input side (224).
    pub img: usize,
    x_scale: Tensor<B>,
    x_shift: Tensor<B>,
}

/// What the backbone keeps for the input gradient.
#[derive(Debug, Clone)]
pub struct BackboneSaved<B: Backend> {
    resize: Option<Bilinear<B>>,
    patches: Tensor<B>,
    blocks: Vec<VitBlockSaved<B>>,
    batch: usize,
}

impl<B: Backend> DinoBackbone<B> {
    /// Random weights (loaded later with [`DinoBackbone::load`]); all buffers.
    pub fn new(b: &B, init: &mut Init, cfg: &DiscConfig) -> Result<Self> {
        let c = cfg.embed_dim;
        if cfg.patch == 0
            || !cfg.img.is_multiple_of(cfg.patch)
            || cfg.heads == 0
            || !c.is_multiple_of(cfg.heads)
        {
            return Err(Error::config(
                "discriminator config",
                format!(
                    "img {} must be a multiple of patch {} and embed_dim {c} of heads {}",
                    cfg.img, cfg.patch, cfg.heads
                ),
            ));
        }
        let g = cfg.img / cfg.patch;
        let vit = VitBlockConfig {
            c,
            heads: cfg.heads,
            hidden: libm::round(c as f64 * cfg.mlp_ratio) as usize,
            eps: cfg.norm_eps,
            act: Unary::GeluTanh,
            layer_scale_init: 1.0,
        };
        let count = cfg.num_blocks();
        let blocks = VitBlock::stack(b, init, "blocks", count, DINO_NAMES, &vit)?;
        let scale: Vec<f32> = (0..3).map(|i| 0.5f32 / STD[i]).collect();
        let shift: Vec<f32> = (0..3).map(|i| (0.5f32 - MEAN[i]) / STD[i]).collect();
        let mut m = DinoBackbone {
            patch_embed: PatchEmbed::new(b, init, "patch_embed.proj", 3, c, cfg.patch)?,
            cls_token: Param::new("cls_token", init.normal(b, &[1, 1, c], 0.02)?),
            pos_embed: Param::new("pos_embed", init.normal(b, &[1, 1 + g * g, c], 0.02)?),
            blocks,
            key_depths: cfg.key_depths.clone(),
            img: cfg.img,
            x_scale: b.upload(&scale, &[3])?,
            x_shift: b.upload(&shift, &[3])?,
        };
        m.visit_mut(&mut |p| p.kind = ParamKind::Buffer);
        Ok(m)
    }

    /// Width `C`.
    pub fn width(&self) -> usize {
        self.cls_token.value.numel()
    }

    /// Loads a DINO checkpoint (`module.` prefix accepted): the fused
    /// `blocks.{i}.attn.qkv.{weight,bias}` are split, the key third of the bias zeroed; the
    /// final `norm.*` is accepted and unused. A missing or mis-shaped tensor is an error
    /// naming it.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let src = src.clone().strip_prefix("module.");
        let c = self.width();
        let mut out = HostTensors::new();
        for (name, t) in src.iter() {
            if name == "norm.weight" || name == "norm.bias" {
                continue;
            }
            let Some(pre) = name
                .strip_suffix(".attn.qkv.weight")
                .or(name.strip_suffix(".attn.qkv.bias"))
            else {
                out.insert(String::from(name), t.clone());
                continue;
            };
            let is_w = name.ends_with("weight");
            let per = if is_w { c * c } else { c };
            let want: Vec<usize> = if is_w { vec![3 * c, c] } else { vec![3 * c] };
            if t.data.len() != 3 * per || t.shape.iter().product::<usize>() != 3 * per {
                return Err(Error::TensorShape {
                    name: String::from(name),
                    expected: crate::shape::Shape::new(&want)?,
                    got: crate::shape::Shape::new(&t.shape)?,
                });
            }
            let dims: Vec<usize> = if is_w { vec![c, c] } else { vec![c] };
            for (i, part) in ["q", "k", "v"].iter().enumerate() {
                let mut data = t.data[i * per..(i + 1) * per].to_vec();
                if !is_w && i == 1 {
                    data.iter_mut().for_each(|v| *v = 0.0);
                }
                let suffix = if is_w { "weight" } else { "bias" };
                out.insert(
                    format!("{pre}.attn.{part}.{suffix}"),
                    HostTensor::new(dims.clone(), data)?,
                );
            }
        }
        match load_module(b, self, &out, "DINO discriminator backbone", &[], false) {
            Err(Error::MissingTensors { model, names }) => {
                // Name the checkpoint's fused tensor rather than our split parts.
                let mut fused: Vec<String> = Vec::new();
                for n in names {
                    let n = fused_name(&n).unwrap_or(n);
                    if !fused.contains(&n) {
                        fused.push(n);
                    }
                }
                Err(Error::MissingTensors {
                    model,
                    names: fused,
                })
            }
            other => other,
        }
    }

    /// Images in `[−1, 1]` `[B, 3, H, W]` → taps `[B, C, N]` in the order
    /// `[last, key_depths...]`, and (with `keep`) what the input gradient needs.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        keep: bool,
    ) -> Result<(Vec<Tensor<B>>, Option<BackboneSaved<B>>)> {
        let (bs, h, w) = match *x.dims() {
            [bs, 3, h, w] => (bs, h, w),
            _ => {
                return Err(Error::bad_shape(
                    "discriminator input",
                    x.shape(),
                    "expected [B, 3, H, W]",
                ))
            }
        };
        let s = self.img;
        let resize = if (h, w) != (s, s) {
            Some(Bilinear::new(b, (h, w), (s, s))?)
        } else {
            None
        };
        let xr = match &resize {
            Some(r) => r.forward(b, x)?,
            None => x.clone(),
        };
        let xn = b.bcast_affine(
            &xr,
            Some(&self.x_scale),
            Some(&self.x_shift),
            [bs, 3, s * s],
        )?;
        let c = self.width();
        let (tok, patches) = self.patch_embed.forward(b, &xn)?;
        let n = tok.dims()[1];
        let cls = b.gather_rows(&self.cls_token.value.reshape(&[1, c])?, &vec![0u32; bs])?;
        let hcur = b.concat_mid(&[&cls, &tok], bs, c)?;
        if self.pos_embed.value.numel() != (1 + n) * c {
            return Err(Error::bad_shape(
                "pos_embed",
                self.pos_embed.value.shape(),
                format!("expected [1, {}, {c}]", 1 + n),
            ));
        }
        let mut hcur = b.bcast_affine(
            &hcur,
            None,
            Some(&self.pos_embed.value.reshape(&[(1 + n) * c])?),
            [bs, (1 + n) * c, 1],
        )?;
        let mut taps = Vec::with_capacity(1 + self.key_depths.len());
        let mut saved = Vec::new();
        let tap = |t: &Tensor<B>| -> Result<Tensor<B>> {
            let p = b.slice_mid(t, [bs, 1 + n, c], 1, n)?;
            b.permute0213(&p.reshape(&[bs, n, c, 1])?)?
                .reshape(&[bs, c, n])
        };
        for (i, blk) in self.blocks.iter().enumerate() {
            let (y, sv) = blk.forward(b, &hcur)?;
            hcur = y;
            if keep {
                saved.push(sv);
            }
            if self.key_depths.contains(&i) {
                taps.push(tap(&hcur)?);
            }
        }
        taps.insert(0, tap(&hcur)?);
        let saved = keep.then_some(BackboneSaved {
            resize,
            patches,
            blocks: saved,
            batch: bs,
        });
        Ok((taps, saved))
    }

    /// The input-image gradient from the taps' gradients (same order as the taps).
    pub fn backward(&self, b: &B, s: &BackboneSaved<B>, dtaps: &[Tensor<B>]) -> Result<Tensor<B>> {
        let c = self.width();
        let bs = s.batch;
        let n = s.patches.dims()[1];
        if dtaps.len() != 1 + self.key_depths.len() || s.blocks.len() != self.blocks.len() {
            return Err(Error::invalid(
                "discriminator backbone backward",
                format!(
                    "{} tap gradients and {} saved blocks for {} taps and {} blocks",
                    dtaps.len(),
                    s.blocks.len(),
                    1 + self.key_depths.len(),
                    self.blocks.len()
                ),
            ));
        }
        let zero_cls = b.zeros(&[bs, 1, c])?;
        let untap = |d: &Tensor<B>| -> Result<Tensor<B>> {
            let t = b.permute0213(&d.reshape(&[bs, c, n, 1])?)?;
            b.concat_mid(&[&zero_cls, &t], bs, c)?
                .reshape(&[bs, 1 + n, c])
        };
        let mut dh = untap(&dtaps[0])?;
        let mut scratch = crate::nn::Grads::new();
        for i in (0..self.blocks.len()).rev() {
            for (j, &kd) in self.key_depths.iter().enumerate() {
                if kd == i {
                    dh = b.binary(crate::backend::Binary::Add, &dh, &untap(&dtaps[1 + j])?)?;
                }
            }
            dh = self.blocks[i].backward(b, &s.blocks[i], &dh, &mut scratch)?;
        }
        let dtok = b.slice_mid(&dh, [bs, 1 + n, c], 1, n)?;
        let dpatches = self
            .patch_embed
            .proj
            .backward(b, &s.patches, &dtok, &mut scratch)?;
        let g = self.img / self.patch_embed.patch;
        let dxn = b.unpatchify(
            &dpatches,
            3,
            (g, g),
            self.patch_embed.patch,
            PatchOrder::ChannelFirst,
        )?;
        let s2 = self.img * self.img;
        let dxr = b
            .bcast_affine(&dxn, Some(&self.x_scale), None, [bs, 3, s2])?
            .reshape(&[bs, 3, self.img, self.img])?;
        match &s.resize {
            Some(r) => r.backward(b, &dxr),
            None => Ok(dxr),
        }
    }
}

impl<B: Backend> Module<B> for DinoBackbone<B> {
    crate::module_params!(patch_embed, cls_token, pos_embed, blocks);
}
