//! Stage-1 adversarial and perceptual training (§2.7): LPIPS (§2.7.5); the DINO
//! discriminator (§2.7.4) and DiffAug (§2.7.6) follow.

pub mod lpips;
