//! Stage-1 adversarial and perceptual training (§2.7): LPIPS (§2.7.5), the frozen DINO
//! discriminator with trainable heads (§2.7.4) and DiffAug (§2.7.6).

pub mod diffaug;
pub mod disc;
pub mod lpips;
