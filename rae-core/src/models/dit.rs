//! DiT-DH (`DiTwDDTHead`, §3): a LightningDiT backbone whose per-token output, fused with the
//! time embedding, conditions a wide, shallow head; and the plain LightningDiT baseline
//! (§3.10), which shares the blocks. Forward and backward; reference names (§3.8).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::config::Cfg;
use super::Mode;
use crate::backend::{Backend, Binary, PatchOrder, Reduce, Unary};
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::nn::tables::{rope_tables, sincos_2d};
use crate::nn::{
    add_opt, load_module, DitBlock, DitBlockSaved, FinalLayer, FinalLayerSaved, Grads, HostTensors,
    Init, LabelEmbedder, Linear, LoadReport, Module, Param, PatchEmbed, SwiGlu, TimestepEmbedder,
    TimestepSaved,
};
use crate::tensor::Tensor;

/// DiT-DH configuration: the reference constructor's arguments (§3.9).
#[derive(Debug, Clone, PartialEq)]
pub struct DitConfig {
    /// Latent grid side (16 at 256²).
    pub input_size: usize,
    /// Patch size (1).
    pub patch_size: usize,
    /// Latent channels (768).
    pub in_channels: usize,
    /// Backbone width `C_enc`.
    pub hidden_enc: usize,
    /// Head width (2048); equal to `hidden_enc` with `depth_dec = 0` for plain LightningDiT.
    pub hidden_dec: usize,
    /// Backbone depth.
    pub depth_enc: usize,
    /// Head depth (2); 0 selects the plain LightningDiT (§3.10).
    pub depth_dec: usize,
    /// Backbone heads.
    pub heads_enc: usize,
    /// Head heads.
    pub heads_dec: usize,
    /// MLP ratio (4).
    pub mlp_ratio: f64,
    /// Label dropout probability in training (0.1).
    pub class_dropout_prob: f32,
    /// Real classes; the null label is this value.
    pub num_classes: usize,
    /// Absolute sin-cos position embedding on the backbone input.
    pub use_pos_embed: bool,
}

impl DitConfig {
    fn dh(enc: usize, depth: usize, heads: usize) -> Self {
        DitConfig {
            input_size: 16,
            patch_size: 1,
            in_channels: 768,
            hidden_enc: enc,
            hidden_dec: 2048,
            depth_enc: depth,
            depth_dec: 2,
            heads_enc: heads,
            heads_dec: 16,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 1000,
            use_pos_embed: true,
        }
    }

    /// DiT-DH-S (384 / 12 / 6 backbone, 2048 × 2 head).
    pub fn dh_s() -> Self {
        Self::dh(384, 12, 6)
    }
    /// DiT-DH-B (768 / 12 / 12).
    pub fn dh_b() -> Self {
        Self::dh(768, 12, 12)
    }
    /// DiT-DH-L (1024 / 24 / 16).
    pub fn dh_l() -> Self {
        Self::dh(1024, 24, 16)
    }
    /// DiT-DH-XL (1152 / 28 / 16), the paper's main model.
    pub fn dh_xl() -> Self {
        Self::dh(1152, 28, 16)
    }

    /// A preset by name: `S`, `B`, `L`, `XL` (optionally `DiTDH-` / `DiT-DH-` prefixed).
    pub fn by_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_uppercase().replace(['-', '_'], "");
        match n.trim_start_matches("DITDH") {
            "S" => Some(Self::dh_s()),
            "B" => Some(Self::dh_b()),
            "L" => Some(Self::dh_l()),
            "XL" => Some(Self::dh_xl()),
            _ => None,
        }
    }

    /// Whether this is the plain LightningDiT (no head).
    pub fn is_plain(&self) -> bool {
        self.depth_dec == 0
    }

    /// Latent tokens.
    pub fn num_tokens(&self) -> usize {
        (self.input_size / self.patch_size).pow(2)
    }

    /// Reads the reference constructor arguments from JSON (`dit_config.json`); flags the
    /// implementation does not support (`use_qknorm`, no SwiGLU, no RMSNorm, no RoPE,
    /// `wo_shift`) are errors, not silently ignored.
    pub fn from_json(v: &JsonValue, source: &str) -> Result<Self> {
        let c = Cfg::new(v, source)?;
        for (key, want) in [
            ("use_qknorm", false),
            ("use_swiglu", true),
            ("use_rope", true),
            ("use_rmsnorm", true),
            ("wo_shift", false),
            ("learn_sigma", false),
        ] {
            if c.bool_or(key, want)? != want {
                return Err(Error::config(
                    format!("{source}: {key}"),
                    format!("only {key} = {want} is supported (the released DiT-DH configuration)"),
                ));
            }
        }
        let (hidden_enc, hidden_dec) = c.pair("hidden_size")?;
        let (depth_enc, depth_dec) = if c.has("depth") {
            c.pair("depth")?
        } else {
            (28, 2)
        };
        let (heads_enc, heads_dec) = c.pair("num_heads")?;
        let plain = c.v_is_int("depth");
        let cfg = DitConfig {
            input_size: c.usize("input_size")?,
            patch_size: c.usize_or("patch_size", 1)?,
            in_channels: c.usize_or("in_channels", 768)?,
            hidden_enc,
            hidden_dec: if plain { hidden_enc } else { hidden_dec },
            depth_enc,
            depth_dec: if plain { 0 } else { depth_dec },
            heads_enc,
            heads_dec: if plain { heads_enc } else { heads_dec },
            mlp_ratio: c.f64_or("mlp_ratio", 4.0)?,
            class_dropout_prob: c.f64_or("class_dropout_prob", 0.1)? as f32,
            num_classes: c.usize_or("num_classes", 1000)?,
            use_pos_embed: c.bool_or("use_pos_embed", true)?,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// This configuration in the reference's argument names.
    pub fn to_json(&self) -> JsonValue {
        let pair = |a: usize, b: usize| -> JsonValue {
            if self.is_plain() {
                a.into()
            } else {
                JsonValue::array([a, b])
            }
        };
        JsonValue::object([
            ("input_size", JsonValue::from(self.input_size)),
            ("patch_size", self.patch_size.into()),
            ("in_channels", self.in_channels.into()),
            ("hidden_size", pair(self.hidden_enc, self.hidden_dec)),
            ("depth", pair(self.depth_enc, self.depth_dec)),
            ("num_heads", pair(self.heads_enc, self.heads_dec)),
            ("mlp_ratio", self.mlp_ratio.into()),
            (
                "class_dropout_prob",
                (self.class_dropout_prob as f64).into(),
            ),
            ("num_classes", self.num_classes.into()),
            ("use_qknorm", false.into()),
            ("use_swiglu", true.into()),
            ("use_rope", true.into()),
            ("use_rmsnorm", true.into()),
            ("wo_shift", false.into()),
            ("use_pos_embed", self.use_pos_embed.into()),
        ])
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::config(format!("{source}: {k}"), why));
        for (name, w, h) in [
            ("backbone", self.hidden_enc, self.heads_enc),
            ("head", self.hidden_dec, self.heads_dec),
        ] {
            if h == 0 || w % h != 0 || (w / h) % 4 != 0 {
                return bad("num_heads", format!("the {name} width {w} must split into {h} heads with a head dim divisible by 4 (RoPE)"));
            }
        }
        if self.patch_size == 0 || self.input_size % self.patch_size != 0 {
            return bad(
                "input_size",
                format!(
                    "{} is not a multiple of the patch size {}",
                    self.input_size, self.patch_size
                ),
            );
        }
        if self.use_pos_embed && self.hidden_enc % 4 != 0 {
            return bad(
                "hidden_size",
                format!(
                    "{} must be a multiple of 4 for the sin-cos table",
                    self.hidden_enc
                ),
            );
        }
        Ok(())
    }
}

trait CfgExt {
    fn v_is_int(&self, key: &str) -> bool;
}

impl CfgExt for Cfg<'_> {
    fn v_is_int(&self, key: &str) -> bool {
        self.has(key) && self.usize(key).is_ok()
    }
}

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
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        f(&self.cos);
        f(&self.sin);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.cos);
        f(&mut self.sin);
    }
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
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        self.x_embedder.visit(f);
        self.s_embedder.visit(f);
        self.s_projector.visit(f);
        self.t_embedder.visit(f);
        self.y_embedder.visit(f);
        self.pos_embed.visit(f);
        self.enc_rope.visit(f);
        self.dec_rope.visit(f);
        self.blocks.visit(f);
        self.final_layer.visit(f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        self.x_embedder.visit_mut(f);
        self.s_embedder.visit_mut(f);
        self.s_projector.visit_mut(f);
        self.t_embedder.visit_mut(f);
        self.y_embedder.visit_mut(f);
        self.pos_embed.visit_mut(f);
        self.enc_rope.visit_mut(f);
        self.dec_rope.visit_mut(f);
        self.blocks.visit_mut(f);
        self.final_layer.visit_mut(f);
    }
}
