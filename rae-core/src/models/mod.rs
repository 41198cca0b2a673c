//! The models of RAE and DiT-DH, generic over the [`Backend`](crate::Backend):
//! the frozen encoders (DINOv2-with-registers §2.2, SigLIP and MAE §2.3), the ViT decoder
//! (§2.6), DiT-DH and the plain LightningDiT (§3), and the [`Rae`] pipeline that ties encoder, latent statistics and
//! decoder together (§2.1, §2.4, §7).

mod config;
pub mod decoder;
pub mod dinov2;
pub mod dit;
mod dit_config;
pub mod encoder;
pub mod inception;
pub mod mae;
pub mod rae;
pub mod siglip;

pub use config::Cfg;
pub use decoder::{DecoderConfig, DecoderSaved, RaeDecoder};
pub use dinov2::{Dinov2Config, Dinov2Encoder, PosInterp};
pub use dit::{DitConfig, DitDh, DitSaved};
pub use encoder::Encoder;
pub use inception::{InceptionOut, InceptionV3};
pub use mae::{MaeConfig, MaeEncoder};
pub use rae::{LatentStats, NoiseRule, Rae};
pub use siglip::{SiglipConfig, SiglipEncoder, SiglipPatch};

/// Whether a forward keeps what its backward needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Inference: activations are dropped as soon as they are used (low memory).
    Infer,
    /// Training: every block's activations are kept for the backward.
    Train,
}
