//! Optimisation (spec §5.1, §2.7.7): AdamW over backend tensors, the parameter EMA, global
//! gradient-norm clipping and learning-rate schedules.
//!
//! Order of one training step (§5.2 step 6, §7.3): backward → [`clip_grad_norm`] → AdamW
//! step with the schedule's rate and the clip factor folded in ([`AdamW::step`]) → EMA
//! update ([`Ema::update`]).

pub mod adamw;
pub mod clip;
pub mod ema;
pub mod schedule;

pub use adamw::{adamw_reference, AdamW, AdamWConfig};
pub use clip::{clip_coefficient, clip_grad_norm, global_grad_norm, scale_grads, ClipReport};
pub use ema::Ema;
pub use schedule::{Decay, LrSchedule, Warmup};
