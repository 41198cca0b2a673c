//! Every file `rae-cli` reads or writes besides the images of a dataset: the parts of a RAE
//! folder (encoder folder, decoder, latent statistics), DiT-DH checkpoints (ours or the
//! reference's, `.pt` or safetensors), training checkpoints, latent caches and noise files,
//! JSON configurations, and the atomic write every output goes through.
//!
//! The submodules import one another by `super::`, never through this file, and import no
//! command or configuration module, so anything above may use the store.

pub mod atomic;
pub mod diffusers;
pub mod dit;
pub mod encoders;
pub mod eval_stats;
pub mod gan;
pub mod inception;
pub mod latents;
pub mod npz;
pub mod rae;
pub mod shards;
pub mod tensor_file;

pub use atomic::{append_line, check_writable_dir, save_safetensors, write_atomic};
pub use diffusers::{is_diffusers_dir, load_diffusers_rae, save_diffusers_rae};
pub use dit::{
    check_dit_checkpoint, checkpoint_metadata, dit_from_file, load_dit, load_dit_from,
    load_dit_with, read_train_checkpoint,
};
pub use encoders::{load_encoder_dir, save_encoder_dir, EncoderConfig, Family};
pub use eval_stats::{is_eval_stats, load_eval_stats, save_eval_stats, EvalStats};
pub use gan::{load_discriminator, load_lpips};
pub use inception::load_inception;
pub use latents::{load_latents, load_noise, save_latents, LatentCache};
pub use npz::{parse_npy, NpyArray, NpyDtype, Npz};
pub use rae::{
    load_decoder, load_encoder, load_rae, load_stats, save_decoder, save_stats, RaePaths,
};
pub use shards::{is_shard_dir, LatentDtype, ShardSet, ShardSpec, ShardWriter};
pub use tensor_file::{load_json, load_tensor_file, pick_weights, read_bytes, TensorFile};
