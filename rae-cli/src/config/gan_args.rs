//! The `train` flags of the stage-1 perceptual and adversarial terms (§2.7): the weight
//! files, the loss weights and the switches. The YAML's `gan` block writes the same fields
//! (flags win).

use std::path::PathBuf;

use clap::Args;

/// Stage-1 LPIPS and GAN options of `train`.
#[derive(Debug, Clone, Default, Args)]
pub struct GanArgs {
    /// LPIPS v0.1 linear weights: the `lpips` package's `weights/v0.1/vgg.pth` (or taming's
    /// `vgg.pth`, the same file). Turns the LPIPS term on (with --vgg-weights).
    #[arg(long)]
    pub lpips_weights: Option<PathBuf>,
    /// VGG-16 weights of LPIPS: torchvision's `vgg16-397923af.pth`, or timm's
    /// `vgg16.tv_in1k` safetensors (the `features.N` tensors are used).
    #[arg(long)]
    pub vgg_weights: Option<PathBuf>,
    /// The discriminator's frozen DINO ViT: `dino_deitsmall8_pretrain.pth` (the reference's
    /// `dino_vit_small_patch8_224.pth`) or timm's `vit_small_patch8_224.dino` safetensors.
    /// Turns the adversarial term on.
    #[arg(long)]
    pub disc_weights: Option<PathBuf>,
    /// The discriminator backbone's shape: S_8 (the paper's), S_16, B_16, or tiny (tests).
    #[arg(long)]
    pub disc_recipe: Option<String>,
    /// L1 only: no LPIPS and no discriminator, whatever --config says.
    #[arg(long)]
    pub no_gan: bool,
    /// ω_L, the weight of LPIPS (default 1; 0 turns LPIPS off).
    #[arg(long)]
    pub perceptual_weight: Option<f32>,
    /// ω_G, the weight of the adversarial term (default 0.75; 0 turns the GAN off).
    #[arg(long)]
    pub disc_weight: Option<f32>,
    /// Epoch (may be fractional) from which LPIPS is in the loss (default 0).
    #[arg(long)]
    pub lpips_start: Option<f64>,
    /// Epoch from which the discriminator is updated (default 0; the paper's 6).
    #[arg(long)]
    pub disc_upd_start: Option<f64>,
    /// Epoch from which the adversarial term is in the decoder's loss (default 0; the
    /// paper's 8).
    #[arg(long)]
    pub disc_start: Option<f64>,
    /// Upper clamp of the adaptive weight λ (default 1e4).
    #[arg(long)]
    pub max_d_weight: Option<f32>,
    /// DiffAug cutout ratio (default 0, the released config's).
    #[arg(long)]
    pub diffaug_cutout: Option<f32>,
    /// Kernel size of the heads' residual convolution (the YAML's `ks`; default 9).
    #[arg(skip)]
    pub disc_ks: Option<usize>,
    /// Tapped backbone depths (the YAML's `key_depths`; default the recipe's).
    #[arg(skip)]
    pub disc_key_depths: Option<Vec<usize>>,
    /// Whether a YAML `gan` block asked for the full objective (then missing weights are an
    /// error rather than the term being off).
    #[arg(skip)]
    pub from_config: Option<String>,
}
