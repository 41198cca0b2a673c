//! DiT-DH (`DiTwDDTHead`, §3): a LightningDiT backbone whose per-token output, fused with the
//! time embedding, conditions a wide, shallow head; and the plain LightningDiT baseline
//! (§3.10), which shares the blocks. Forward and backward; reference names (§3.8).

use alloc::format;
use alloc::vec::Vec;

use super::Mode;
use crate::backend::{Backend, Binary, PatchOrder, Reduce, Unary};
use crate::error::{Error, Result};
use crate::nn::tables::{rope_tables, sincos_2d};
use crate::nn::{
    add_opt, load_module, DitBlock, DitBlockSaved, FinalLayer, FinalLayerSaved, Grads, HostTensors,
    Init, LabelEmbedder, Linear, LoadReport, Module, Param, PatchEmbed, SwiGlu, TimestepEmbedder,
    TimestepSaved,
};
use crate::tensor::Tensor;

pub use super::dit_config::DitConfig;

/// A pair of RoPE tables.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// `{prefix}.freqs_cos` `[N, hd]`.
    pub cos: Param<B>,
    /// `{prefix}.freqs_sin` `[N, hd]`.
    pub sin: Param<B>,
}

impl<B: Backend> Rope<B> {
    fn new(b: &B, prefix: &str, hd: usize, g: usize) -> Result<Self> {
        let (c, s) = rope_tables(hd, g)?;
        Ok(Rope {
            cos: Param::buffer(format!("{prefix}.freqs_cos"), b.upload(&c, &[g * g, hd])?),
            sin: Param::buffer(format!("{prefix}.freqs_sin"), b.upload(&s, &[g * g, hd])?),
        })
    }

    fn tables(&self) -> Option<(&Tensor<B>, &Tensor<B>)> {
        Some((&self.cos.value, &self.sin.value))
    }
}

impl<B: Backend> Module<B> for Rope<B> {
    crate::module_params!(cos, sin);
}

/// DiT-DH (or, with `depth_dec = 0`, the plain LightningDiT).
#[derive(Debug, Clone)]
pub struct DitDh<B: Backend> {
    /// Configuration.
    pub config: DitConfig,
    /// `x_embedder.proj`: the head's view of the input (the only embedder when plain).
    pub x_embedder: PatchEmbed<B>,
    /// `s_embedder.proj`: the backbone's view of the input (absent when plain).
    pub s_embedder: Option<PatchEmbed<B>>,
    /// `s_projector` (`C_enc → C_dec`; absent when the widths are equal).
    pub s_projector: Option<Linear<B>>,
    /// `t_embedder`.
    pub t_embedder: TimestepEmbedder<B>,
    /// `y_embedder`.
    pub y_embedder: LabelEmbedder<B>,
    /// `pos_embed` `[1, N, C_enc]`, frozen.
    pub pos_embed: Option<Param<B>>,
    /// `enc_feat_rope` (`feat_rope` when plain).
    pub enc_rope: Rope<B>,
    /// `dec_feat_rope` (absent when plain).
    pub dec_rope: Option<Rope<B>>,
    /// `blocks.{i}`: backbone blocks then head blocks.
    pub blocks: Vec<DitBlock<B>>,
    /// `final_layer`.
    pub final_layer: FinalLayer<B>,
}

/// Saved activations of a DiT forward.
#[derive(Debug, Clone)]
pub struct DitSaved<B: Backend> {
    labels: Vec<u32>,
    t: TimestepSaved<B>,
    c_pre: Tensor<B>,
    s_patches: Option<Tensor<B>>,
    x_patches: Tensor<B>,
    enc: Vec<DitBlockSaved<B>>,
    s_pre: Option<Tensor<B>>,
    s_act: Option<Tensor<B>>,
    head: Vec<DitBlockSaved<B>>,
    fin: FinalLayerSaved<B>,
}

impl<B: Backend> DitDh<B> {
    /// A model initialised for training from scratch (§3.7; §3.10 for the plain model).
    pub fn new(b: &B, init: &mut Init, config: DitConfig) -> Result<Self> {
        config.validate("DiT config")?;
        let cfg = &config;
        let g = cfg.input_size / cfg.patch_size;
        let plain = cfg.is_plain();
        let mut x_embedder = PatchEmbed::new(
            b,
            init,
            "x_embedder.proj",
            cfg.in_channels,
            cfg.hidden_dec,
            cfg.patch_size,
        )?;
        x_embedder.init_xavier(b, init)?;
        let s_embedder = if plain {
            None
        } else {
            let mut s = PatchEmbed::new(
                b,
                init,
                "s_embedder.proj",
                cfg.in_channels,
                cfg.hidden_enc,
                cfg.patch_size,
            )?;
            s.init_xavier(b, init)?;
            Some(s)
        };
        let s_projector = if !plain && cfg.hidden_enc != cfg.hidden_dec {
            Some(Linear::new(
                b,
                init,
                "s_projector",
                &[cfg.hidden_dec, cfg.hidden_enc],
                true,
            )?)
        } else {
            None
        };
        let pos_embed = if cfg.use_pos_embed {
            Some(Param::buffer(
                "pos_embed",
                b.upload(&sincos_2d(cfg.hidden_enc, g)?, &[1, g * g, cfg.hidden_enc])?,
            ))
        } else {
            None
        };
        let enc_rope = Rope::new(
            b,
            if plain { "feat_rope" } else { "enc_feat_rope" },
            cfg.hidden_enc / cfg.heads_enc,
            g,
        )?;
        let dec_rope = if plain {
            None
        } else {
            Some(Rope::new(
                b,
                "dec_feat_rope",
                cfg.hidden_dec / cfg.heads_dec,
                g,
            )?)
        };
        let mut blocks = Vec::new();
        for i in 0..cfg.depth_enc + cfg.depth_dec {
            let (c, h) = if i < cfg.depth_enc {
                (cfg.hidden_enc, cfg.heads_enc)
            } else {
                (cfg.hidden_dec, cfg.heads_dec)
            };
            blocks.push(DitBlock::new(
                b,
                init,
                &format!("blocks.{i}"),
                c,
                h,
                SwiGlu::<B>::hidden_size(c, cfg.mlp_ratio),
            )?);
        }
        let out = cfg.patch_size * cfg.patch_size * cfg.in_channels;
        let mut model = DitDh {
            t_embedder: TimestepEmbedder::new(b, init, cfg.hidden_enc)?,
            y_embedder: LabelEmbedder::new(b, init, cfg.num_classes, cfg.hidden_enc)?,
            final_layer: FinalLayer::new(b, init, cfg.hidden_dec, out)?,
            x_embedder,
            s_embedder,
            s_projector,
            pos_embed,
            enc_rope,
            dec_rope,
            blocks,
            config,
        };
        if plain {
            model.xavier_all_linears(b, init)?;
        }
        Ok(model)
    }

    /// LightningDiT initialisation: every linear Xavier-uniform with zero bias, then the
    /// special inits of §3.7 again (§3.10).
    fn xavier_all_linears(&mut self, b: &B, init: &mut Init) -> Result<()> {
        let mut err = None;
        let keep_normal = [
            "t_embedder.mlp.0.weight",
            "t_embedder.mlp.2.weight",
            "y_embedder.embedding_table.weight",
        ];
        let zeroed =
            |n: &str| n.contains("adaLN_modulation") || n.starts_with("final_layer.linear");
        self.visit_mut(&mut |p| {
            if err.is_some()
                || !p.trainable()
                || keep_normal.contains(&p.name.as_str())
                || zeroed(&p.name)
            {
                return;
            }
            let r = if p.name.ends_with(".bias") {
                b.zeros(p.value.dims())
            } else if p.value.dims().len() >= 2 {
                init.xavier_uniform(b, p.value.dims())
            } else {
                return;
            };
            match r {
                Ok(v) => p.value = v,
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Loads reference weights by name. Frozen buffers present in the file (`t_embedder.W`,
    /// `pos_embed`, RoPE tables) are loaded, never regenerated; `pos_embed` and the RoPE
    /// tables may be absent (they are deterministic), `t_embedder.W` may not.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let optional = [
            "pos_embed",
            "enc_feat_rope.freqs_cos",
            "enc_feat_rope.freqs_sin",
            "dec_feat_rope.freqs_cos",
            "dec_feat_rope.freqs_sin",
            "feat_rope.freqs_cos",
            "feat_rope.freqs_sin",
        ];
        let name = if self.config.is_plain() {
            "LightningDiT"
        } else {
            "DiT-DH"
        };
        load_module(b, self, src, name, &optional, false)
    }

    /// Predicted velocity `[B, C, H, W]` for noisy latents `x` `[B, C, H, W]`, flow times `t`
    /// (`[B]`, shifted, 1 = noise) and labels `y` (`num_classes` = null). Label dropout is the
    /// caller's (training) business. In [`Mode::Train`] the activations for
    /// [`DitDh::backward`] are returned.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        t: &[f32],
        y: &[u32],
        mode: Mode,
    ) -> Result<(Tensor<B>, Option<DitSaved<B>>)> {
        let cfg = &self.config;
        let dims = x.dims();
        let g = cfg.input_size;
        if dims.len() != 4 || dims[1] != cfg.in_channels || dims[2] != g || dims[3] != g {
            let bs = dims.first().copied().unwrap_or(1);
            return Err(Error::shape(
                "DiT input",
                &crate::Shape::new(&[bs, cfg.in_channels, g, g])?,
                x.shape(),
            ));
        }
        let bs = dims[0];
        if t.len() != bs || y.len() != bs {
            return Err(Error::invalid(
                "DiT forward",
                format!(
                    "batch of {bs} latents needs {bs} times and labels, got {} and {}",
                    t.len(),
                    y.len()
                ),
            ));
        }
        let train = mode == Mode::Train;
        let n = cfg.num_tokens();
        let (ce, cd) = (cfg.hidden_enc, cfg.hidden_dec);
        let (te, ts) = self.t_embedder.forward(b, t)?;
        let ye = self.y_embedder.forward(b, y)?;
        let c_pre = b.binary(Binary::Add, &te, &ye)?;
        // §3.1: c = SiLU(te + ye) for DiT-DH; the plain LightningDiT uses te + ye (§3.10).
        let c = if cfg.is_plain() {
            c_pre.clone()
        } else {
            b.unary(Unary::Silu, &c_pre)?
        };
        let c3 = c.reshape(&[bs, 1, ce])?;

        let (mut enc_saved, mut head_saved) = (Vec::new(), Vec::new());
        let (s_patches, s_pre, s_act, head_cond, x_patches, mut h);
        if let Some(se) = &self.s_embedder {
            let (s, sp) = se.forward(b, x)?;
            let mut s = self.add_pos(b, &s, bs, n, ce)?;
            for blk in &self.blocks[..cfg.depth_enc] {
                let (y2, sv) = blk.forward(b, &s, &c3, self.enc_rope.tables())?;
                if train {
                    enc_saved.push(sv);
                }
                s = y2;
            }
            // §3.1: s = SiLU(broadcast(te) + s) — te, not c.
            let pre = b.modulate(&s, Some(&te.reshape(&[bs, 1, ce])?), None)?;
            let act = b.unary(Unary::Silu, &pre)?;
            let cond = match &self.s_projector {
                Some(p) => p.forward(b, &act)?,
                None => act.clone(),
            };
            let (xe, xp) = self.x_embedder.forward(b, x)?;
            s_patches = Some(sp);
            s_pre = Some(pre);
            s_act = Some(act);
            head_cond = cond;
            x_patches = xp;
            h = xe;
            let rope = self.dec_rope.as_ref().and_then(|r| r.tables());
            for blk in &self.blocks[cfg.depth_enc..] {
                let (y2, sv) = blk.forward(b, &h, &head_cond, rope)?;
                if train {
                    head_saved.push(sv);
                }
                h = y2;
            }
        } else {
            let (xe, xp) = self.x_embedder.forward(b, x)?;
            h = self.add_pos(b, &xe, bs, n, cd)?;
            for blk in &self.blocks {
                let (y2, sv) = blk.forward(b, &h, &c3, self.enc_rope.tables())?;
                if train {
                    enc_saved.push(sv);
                }
                h = y2;
            }
            s_patches = None;
            s_pre = None;
            s_act = None;
            head_cond = c3.clone();
            x_patches = xp;
        }
        let (o, fin) = self.final_layer.forward(b, &h, &head_cond)?;
        let gp = g / cfg.patch_size;
        let v = b.unpatchify(
            &o,
            cfg.in_channels,
            (gp, gp),
            cfg.patch_size,
            PatchOrder::ChannelLast,
        )?;
        let saved = train.then(|| DitSaved {
            labels: y.to_vec(),
            t: ts,
            c_pre,
            s_patches,
            x_patches,
            enc: enc_saved,
            s_pre,
            s_act,
            head: head_saved,
            fin,
        });
        Ok((v, saved))
    }

    fn add_pos(&self, b: &B, s: &Tensor<B>, bs: usize, n: usize, c: usize) -> Result<Tensor<B>> {
        match &self.pos_embed {
            Some(p) => b.bcast_affine(s, None, Some(&p.value.reshape(&[n * c])?), [bs, n * c, 1]),
            None => Ok(s.clone()),
        }
    }

    /// Backward from the velocity gradient `dv` `[B, C, H, W]`; adds every trainable
    /// parameter's gradient to `grads`.
    pub fn backward(
        &self,
        b: &B,
        s: &DitSaved<B>,
        dv: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<()> {
        let cfg = &self.config;
        let bs = dv.dims()[0];
        let (n, ce) = (cfg.num_tokens(), cfg.hidden_enc);
        let dout = b.patchify(dv, cfg.patch_size, PatchOrder::ChannelLast)?;
        let (mut dh, dcond_fin) = self.final_layer.backward(b, &s.fin, &dout, grads)?;
        let mut dc: Option<Tensor<B>> = None;
        let mut dte_extra: Option<Tensor<B>> = None;
        if let (Some(se), Some(sp), Some(s_pre), Some(s_act)) =
            (&self.s_embedder, &s.s_patches, &s.s_pre, &s.s_act)
        {
            let mut ds = Some(dcond_fin);
            let rope = self.dec_rope.as_ref().and_then(|r| r.tables());
            for (blk, sv) in self.blocks[cfg.depth_enc..].iter().zip(&s.head).rev() {
                let (dx, dcond) = blk.backward(b, sv, &dh, rope, grads)?;
                dh = dx;
                ds = add_opt(b, ds, dcond)?;
            }
            self.x_embedder.backward(b, &s.x_patches, &dh, grads)?;
            let ds =
                ds.ok_or_else(|| Error::invalid("DiT backward", "no head conditioning gradient"))?;
            let ds_act = match &self.s_projector {
                Some(p) => p.backward(b, s_act, &ds, grads)?,
                None => ds,
            };
            let dpre = b.unary_backward(Unary::Silu, s_pre, &ds_act)?;
            dte_extra = Some(b.reduce(Reduce::Sum, &dpre, [bs, n, ce])?);
            let mut dsb = dpre;
            for (blk, sv) in self.blocks[..cfg.depth_enc].iter().zip(&s.enc).rev() {
                let (dx, dcond) = blk.backward(b, sv, &dsb, self.enc_rope.tables(), grads)?;
                dsb = dx;
                dc = add_opt(b, dc, dcond)?;
            }
            se.backward(b, sp, &dsb, grads)?;
        } else {
            dc = Some(dcond_fin);
            for (blk, sv) in self.blocks.iter().zip(&s.enc).rev() {
                let (dx, dcond) = blk.backward(b, sv, &dh, self.enc_rope.tables(), grads)?;
                dh = dx;
                dc = add_opt(b, dc, dcond)?;
            }
            self.x_embedder.backward(b, &s.x_patches, &dh, grads)?;
        }
        let dc = dc
            .ok_or_else(|| Error::invalid("DiT backward", "no conditioning gradient"))?
            .reshape(&[bs, ce])?;
        let dc_pre = if cfg.is_plain() {
            dc
        } else {
            b.unary_backward(Unary::Silu, &s.c_pre, &dc)?
        };
        let dte = match dte_extra {
            Some(e) => b.binary(Binary::Add, &dc_pre, &e)?,
            None => dc_pre.clone(),
        };
        self.t_embedder.backward(b, &s.t, &dte, grads)?;
        self.y_embedder.backward(b, &s.labels, &dc_pre, grads)
    }
}

impl<B: Backend> Module<B> for DitDh<B> {
    crate::module_params!(
        x_embedder,
        s_embedder,
        s_projector,
        t_embedder,
        y_embedder,
        pos_embed,
        enc_rope,
        dec_rope,
        blocks,
        final_layer
    );
}
