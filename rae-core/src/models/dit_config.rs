//! DiT-DH configuration (§3.9): the reference constructor's arguments, read from and
//! written to JSON, with every size checked against [`crate::limits`].

use alloc::format;
use alloc::string::String;

use super::config::Cfg;
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::limits;

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

    /// A lower bound on the parameter count (the attention and MLP weights of every block),
    /// computed without overflow; compared with [`limits::MAX_PARAMS`] and with the values a
    /// weights file holds before anything is allocated.
    pub fn min_params(&self) -> u128 {
        let block = |c: usize| {
            let c = c as u128;
            let mlp = (c as f64 * self.mlp_ratio.clamp(0.0, limits::MAX_MLP_RATIO)) as u128;
            4 * c * c + 2 * c * mlp
        };
        self.depth_enc as u128 * block(self.hidden_enc)
            + self.depth_dec as u128 * block(self.hidden_dec)
    }

    /// Checks every size against its limit (§3.9 gives the released values) and that the
    /// sizes fit together. `source` names the file, preset or config section in the error.
    pub fn validate(&self, source: &str) -> Result<()> {
        use limits::{check_usize, MAX_CLASSES, MAX_DEPTH, MAX_GRID, MAX_HEADS, MAX_PATCH};
        let bad = |k: &str, why: String| Err(Error::config(format!("{source}: {k}"), why));
        check_usize(source, "patch_size", self.patch_size, 1, MAX_PATCH)?;
        check_usize(
            source,
            "input_size",
            self.input_size,
            1,
            MAX_GRID * self.patch_size,
        )?;
        check_usize(
            source,
            "in_channels",
            self.in_channels,
            1,
            limits::MAX_WIDTH,
        )?;
        check_usize(source, "hidden_size", self.hidden_enc, 1, limits::MAX_WIDTH)?;
        check_usize(
            source,
            "hidden_size (head)",
            self.hidden_dec,
            1,
            limits::MAX_WIDTH,
        )?;
        check_usize(source, "depth", self.depth_enc, 1, MAX_DEPTH)?;
        check_usize(source, "depth (head)", self.depth_dec, 0, MAX_DEPTH)?;
        check_usize(source, "num_heads", self.heads_enc, 1, MAX_HEADS)?;
        check_usize(source, "num_heads (head)", self.heads_dec, 1, MAX_HEADS)?;
        check_usize(source, "num_classes", self.num_classes, 1, MAX_CLASSES)?;
        limits::check_f64(
            source,
            "mlp_ratio",
            self.mlp_ratio,
            1.0 / 64.0,
            limits::MAX_MLP_RATIO,
        )?;
        limits::check_f64_open(
            source,
            "class_dropout_prob",
            self.class_dropout_prob as f64,
            0.0,
            1.0,
        )?;
        let tokens = (self.input_size / self.patch_size).pow(2);
        check_usize(source, "input_size (tokens)", tokens, 1, limits::MAX_TOKENS)?;
        limits::check_params(source, self.min_params())?;
        for (name, w, h) in [
            ("backbone", self.hidden_enc, self.heads_enc),
            ("head", self.hidden_dec, self.heads_dec),
        ] {
            if h == 0 || w % h != 0 || (w / h) % 4 != 0 {
                return bad("num_heads", format!("the {name} width {w} must split into {h} heads with a head dim divisible by 4 (RoPE)"));
            }
        }
        if self.patch_size == 0 || !self.input_size.is_multiple_of(self.patch_size) {
            return bad(
                "input_size",
                format!(
                    "{} is not a multiple of the patch size {}",
                    self.input_size, self.patch_size
                ),
            );
        }
        if self.use_pos_embed && !self.hidden_enc.is_multiple_of(4) {
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
