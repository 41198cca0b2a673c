//! Which keys each section of a reference config may hold (for reporting unknown keys).

use rae_core::json::JsonValue;

/// Keys of the DiT-DH constructor (`stage_2.params`, `guidance.guidance_model.params`).
const DIT_KEYS: &[&str] = &[
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "use_qknorm",
    "use_swiglu",
    "use_rope",
    "use_rmsnorm",
    "wo_shift",
    "use_pos_embed",
    "learn_sigma",
];

/// The keys each section may hold; `None` for a key that is not a section.
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "" => &[
            "stage_1",
            "stage_2",
            "transport",
            "sampler",
            "guidance",
            "misc",
            "training",
            "gan",
            "eval",
        ],
        "stage_1" => &["target", "params", "ckpt"],
        "stage_1.params" => &[
            "encoder_cls",
            "encoder_config_path",
            "encoder_input_size",
            "encoder_params",
            "decoder_config_path",
            "decoder_patch_size",
            "pretrained_decoder_path",
            "noise_tau",
            "reshape_to_2d",
            "normalization_stat_path",
            "eps",
        ],
        "stage_2" | "guidance.guidance_model" => &["target", "params", "ckpt"],
        "stage_2.params" | "guidance.guidance_model.params" => DIT_KEYS,
        "transport" => &["params"],
        "transport.params" => &[
            "path_type",
            "prediction",
            "loss_weight",
            "time_dist_type",
            "train_eps",
            "sample_eps",
        ],
        "sampler" => &["mode", "params"],
        "sampler.params" => &[
            "sampling_method",
            "num_steps",
            "atol",
            "rtol",
            "reverse",
            "diffusion_form",
            "diffusion_norm",
            "last_step",
            "last_step_size",
        ],
        "guidance" => &[
            "method",
            "scale",
            "t_min",
            "t-min",
            "t_max",
            "t-max",
            "guidance_model",
        ],
        "misc" => &[
            "latent_size",
            "num_classes",
            "null_label",
            "time_dist_shift_dim",
            "time_dist_shift_base",
            // Ours: the reference takes it as `--precision` only (§7.5).
            "precision",
        ],
        "training" => &[
            "epochs",
            "global_batch_size",
            "batch_size",
            "grad_accum_steps",
            "ema_decay",
            "num_workers",
            "log_interval",
            "checkpoint_interval",
            "sample_every",
            "clip_grad",
            "global_seed",
            "cfg_scale",
            "optimizer",
            "scheduler",
            // Older spellings (the 512² training config) that the reference reads as
            // fall-backs or not at all.
            "log_every",
            "ckpt_every",
            "base_lr",
            "final_lr",
            "beta",
            "wd",
            "schedule_type",
            "decay_start_epoch",
            "decay_end_epoch",
        ],
        "training.optimizer" => &["type", "lr", "betas", "beta", "weight_decay", "wd", "eps"],
        "training.scheduler" => &[
            "type",
            "warmup_epochs",
            "warmup_steps",
            "decay_end_epoch",
            "decay_end_steps",
            "base_lr",
            "final_lr",
            "warmup_from_zero",
        ],
        "gan" => &["disc", "loss"],
        "gan.disc" => &["arch", "optimizer", "scheduler", "augment"],
        "gan.disc.arch" => &[
            "dino_ckpt_path",
            "ks",
            "key_depths",
            "norm_type",
            "using_spec_norm",
            "recipe",
        ],
        "gan.disc.optimizer" => &["lr", "betas", "weight_decay"],
        "gan.disc.scheduler" => &[
            "type",
            "warmup_epochs",
            "decay_end_epoch",
            "base_lr",
            "final_lr",
            "warmup_from_zero",
        ],
        "gan.disc.augment" => &["prob", "cutout"],
        "gan.loss" => &[
            "disc_loss",
            "gen_loss",
            "disc_weight",
            "perceptual_weight",
            "disc_start",
            "disc_upd_start",
            "lpips_start",
            "max_d_weight",
            "disc_updates",
        ],
        "eval" => &[
            "eval_interval",
            "eval_model",
            "data_path",
            "reference_npz_path",
            "metrics",
        ],
        _ => return None,
    })
}

/// Sections whose contents are accepted as they are (passed to the encoder constructor).
fn free_section(path: &str) -> bool {
    path == "stage_1.params.encoder_params"
}

pub(super) fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

pub(super) fn walk(v: &JsonValue, section: &str, out: &mut Vec<String>) {
    let (Some(members), Some(allowed)) = (v.as_object(), section_keys(section)) else {
        return;
    };
    for (k, child) in members {
        let path = join(section, k);
        if !allowed.contains(&k.as_str()) {
            out.push(path);
        } else if !free_section(&path) {
            walk(child, &path, out);
        }
    }
}
