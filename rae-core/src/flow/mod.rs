//! Flow matching (spec §4): the straight path between data and noise, training-time
//! distributions, the dimension-dependent schedule shift, ODE/SDE samplers over any
//! [`crate::Backend`], and classifier-free / auto guidance.
//!
//! Time convention (§0, §10.1): **`t = 0` is data, `t = 1` is noise**,
//! `x_t = (1 − t)·x + t·ε`, velocity `v = ε − x`; sampling integrates from `t ≈ 1` toward 0.

pub mod guidance;
pub mod path;
pub mod sampler;
pub mod shift;
pub mod time;

pub use guidance::{AutoGuidance, ClassifierFreeGuidance, ConditionalModel, GuidanceInterval};
pub use path::{interpolate, interpolate_host, velocity_target, velocity_target_host};
pub use sampler::{
    sample_ode, sample_sde, Diffusion, Keep, LastStep, OdeMethod, SdeMethod, SdeOptions,
    Trajectory, VelocityField,
};
pub use shift::{
    sde_grid, shift, shift_factor, shifted_grid, shifted_grid_range, unshift, REFERENCE_GRID_END,
    SDE_REFERENCE_LAST_STEP, SHIFT_BASE_DIM,
};
pub use time::{inv_normal_cdf, normal_cdf, TimeDist, REFERENCE_T0, REFERENCE_T1};
