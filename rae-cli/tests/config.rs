//! `--config X.yaml`: the reference's YAML configs (copies in `tests/fixtures/configs/`)
//! parse into the same settings as the equivalent flags, flags override the file, unknown
//! keys are reported by path, bad values and hub ids give named errors, and `sample
//! --config` runs end to end on a tiny run (safetensors) and on a PyTorch-written training
//! checkpoint (`tests/fixtures/dit_train_ckpt.pt`, made by `tools/make_config_fixtures.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails, fixture, ok, tmp, TINY_RUN};
use rae_cli::cli::{Command, SampleArgs, TrainArgs};
use rae_cli::config::{parse_args, RefConfig};
use rae_cli::presets;
use rae_cli::store::load_tensor_file;
use rae_core::json::parse_named;
use rae_core::models::{DecoderConfig, DitConfig};
use rae_core::optim::{AdamWConfig, LrSchedule};

const AG: &str = "configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B_AG.yaml";
const TRAIN_S: &str = "configs/stage2/training/ImageNet256/DiTDH-S_DINOv2-B.yaml";
const STAGE1: &str = "configs/stage1/training/DINOv2-B_decXL.yaml";

fn cfg_path(rel: &str) -> String {
    fixture(rel).display().to_string()
}

fn sample_args(argv: &[&str]) -> (SampleArgs, Vec<String>) {
    let mut v = vec!["rae-cli", "sample"];
    v.extend_from_slice(argv);
    let (cli, notes) = parse_args(v).unwrap();
    match cli.command {
        Command::Sample(a) => (a, notes),
        other => panic!("parsed {other:?}"),
    }
}

fn train_args(argv: &[&str]) -> (TrainArgs, Vec<String>) {
    let mut v = vec!["rae-cli", "train"];
    v.extend_from_slice(argv);
    let (cli, notes) = parse_args(v).unwrap();
    match cli.command {
        Command::Train(a) => (a, notes),
        other => panic!("parsed {other:?}"),
    }
}

fn parse_err(argv: &[&str]) -> String {
    parse_args(argv.iter().copied()).unwrap_err().to_string()
}

#[test]
fn reference_configs_have_no_unknown_keys() {
    for rel in [AG, TRAIN_S, STAGE1] {
        let c = RefConfig::load(&fixture(rel)).unwrap();
        assert_eq!(c.unknown_keys(), Vec::<String>::new(), "{rel}");
    }
}

#[test]
fn autoguidance_sampling_config_equals_its_flags() {
    let ag = cfg_path(AG);
    // Paths the test machine does not have are given as flags (which win over the file).
    let common = [
        "--ckpt",
        "xl.pt",
        "--rae",
        "somewhere",
        "--guidance-model",
        "s.pt",
    ];
    let mut with_cfg = vec!["--config", ag.as_str()];
    with_cfg.extend(common);
    let (y, notes) = sample_args(&with_cfg);
    assert!(
        notes.iter().all(|n| !n.contains("unknown key")),
        "{notes:?}"
    );
    let mut flags = vec![
        "--sampler",
        "euler",
        "--steps",
        "50",
        "--cfg-scale",
        "1.42",
        "--cfg-interval",
        "0,1",
        "--shift-base",
        "4096",
    ];
    flags.extend(common);
    let (f, _) = sample_args(&flags);
    assert_eq!(y.sampler, f.sampler);
    assert_eq!(y.steps, f.steps);
    assert_eq!(y.cfg_scale, f.cfg_scale);
    assert_eq!(y.cfg_interval, f.cfg_interval);
    assert_eq!(y.shift_base, f.shift_base);
    assert_eq!(y.ckpt, f.ckpt);
    assert_eq!(y.guidance_model, f.guidance_model);
    assert_eq!(y.rae.rae, f.rae.rae);
    // The architectures: DiT-DH-XL and the DiT-DH-S guide on [768, 16, 16] latents.
    let plan = y.plan.unwrap();
    let latent = [768, 16, 16];
    assert_eq!(
        plan.dit,
        Some(presets::dit_preset("XL", latent, 1000).unwrap())
    );
    assert_eq!(
        plan.guide,
        Some(presets::dit_preset("S", latent, 1000).unwrap())
    );
    // --model wins over stage_2.params (for both networks).
    let mut m = with_cfg.clone();
    m.extend(["--model", "B"]);
    let (a, _) = sample_args(&m);
    let p = a.plan.unwrap();
    assert!(p.dit.is_none() && p.guide.is_none());
    // Flags override the sampler settings of the file.
    let mut o = with_cfg.clone();
    o.extend(["--steps", "7", "--cfg-scale", "3", "--sampler", "heun"]);
    let (a, _) = sample_args(&o);
    assert_eq!(
        (a.steps, a.cfg_scale, a.sampler.as_str()),
        (7, Some(3.0), "heun")
    );
}

#[test]
fn stage2_training_config_equals_its_flags() {
    let path = cfg_path(TRAIN_S);
    let (y, notes) = train_args(&["--config", &path, "--rae", "r"]);
    assert!(notes.iter().any(|n| n.contains("eval:")), "{notes:?}");
    let (f, _) = train_args(&[
        "--stage",
        "2",
        "--rae",
        "r",
        "--batch-size",
        "1024",
        "--ema-decay",
        "0.9995",
        "--clip",
        "1",
        "--seed",
        "42",
        "--time-dist",
        "logit-normal_0_1",
        "--shift-base",
        "4096",
        "--log-every",
        "100",
        "--sample-every",
        "2500",
        "--sample-steps",
        "50",
        "--sample-cfg",
        "1",
        "--model",
        "S",
    ]);
    assert_eq!(y.stage, f.stage);
    assert_eq!(y.batch_size, f.batch_size);
    assert_eq!(y.ema_decay, f.ema_decay);
    assert_eq!(y.clip, f.clip);
    assert_eq!(y.seed, f.seed);
    assert_eq!(y.time_dist, f.time_dist);
    assert_eq!(y.shift_base, f.shift_base);
    assert_eq!(y.log_every, f.log_every);
    assert_eq!(y.sample_every, f.sample_every);
    assert_eq!(y.sample_steps, f.sample_steps);
    assert_eq!(y.sample_cfg, f.sample_cfg);
    let plan = y.plan.clone().unwrap();
    assert_eq!(
        plan.dit_for([768, 16, 16]).unwrap().unwrap(),
        presets::dit_preset(&f.model, [768, 16, 16], 1000).unwrap()
    );
    // A wrong latent shape is named.
    let e = plan.dit_for([32, 8, 8]).unwrap().unwrap_err().to_string();
    assert!(
        e.contains("stage_2.params") && e.contains("[32, 8, 8]"),
        "{e}"
    );
    assert_eq!(plan.adamw(), Some(AdamWConfig::default()));
    // ImageNet at batch 1024: 1251 steps per epoch; the §5.1 schedule and 1400 epochs.
    let spe = 1251;
    assert_eq!(
        plan.lr_schedule(spe, y.lr, y.final_lr, y.warmup_steps)
            .unwrap()
            .unwrap(),
        LrSchedule::stage2_reference(spe).unwrap()
    );
    assert_eq!(plan.total_steps(None, spe), Some(1400 * spe));
    // Flags win: --lr replaces the base rate only, --max-steps the epoch count, --model the
    // architecture.
    let (o, _) = train_args(&[
        "--config",
        &path,
        "--rae",
        "r",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--max-steps",
        "10",
        "--model",
        "tiny",
        "--seed",
        "3",
    ]);
    assert_eq!((o.batch_size, o.seed), (Some(8), 3));
    let p = o.plan.clone().unwrap();
    assert!(p.dit.is_none());
    assert_eq!(p.total_steps(o.max_steps, spe), None);
    let s = p
        .lr_schedule(spe, o.lr, o.final_lr, o.warmup_steps)
        .unwrap()
        .unwrap();
    assert_eq!((s.base_lr, s.final_lr), (1e-3, 2e-5));
    assert_eq!(s.warmup_steps, 40 * spe);
}

#[test]
fn stage1_training_config_equals_its_flags() {
    let path = cfg_path(STAGE1);
    let enc = fixture("dinov2").display().to_string();
    let (y, notes) = train_args(&["--config", &path, "--encoder", &enc]);
    assert!(!notes.iter().any(|n| n.contains("gan")), "{notes:?}");
    // The gan block: the discriminator's checkpoint, recipe and kernel, the loss weights and
    // the epoch switches of §2.7.2.
    let g = &y.gan;
    assert!(g.from_config.is_some() && !g.no_gan);
    assert!(g
        .disc_weights
        .as_ref()
        .unwrap()
        .ends_with("models/discs/dino_vit_small_patch8_224.pth"));
    assert_eq!(g.disc_recipe.as_deref(), Some("S_8"));
    assert_eq!(g.disc_ks, Some(9));
    assert_eq!(
        (g.disc_weight, g.perceptual_weight),
        (Some(0.75), Some(1.0))
    );
    assert_eq!(
        (g.lpips_start, g.disc_upd_start, g.disc_start),
        (Some(0.0), Some(6.0), Some(8.0))
    );
    assert_eq!((g.max_d_weight, g.diffaug_cutout), (Some(1e4), Some(0.0)));
    assert_eq!(y.stage, Some(1));
    assert_eq!(y.noise_tau, 0.8);
    assert_eq!(y.batch_size, Some(512));
    assert_eq!(y.ema_decay, Some(0.9978));
    assert_eq!(y.clip, Some(0.0));
    assert_eq!(y.rae.encoder_input_size, Some(224));
    // configs/decoder/ViTXL, sized as the reference does for this encoder (width 32, patch
    // 14, input 224 → 16×16 tokens): hidden 32, patch 16, image 256.
    let text = y.rae.decoder_config.clone().unwrap();
    let dec = DecoderConfig::from_json(&parse_named(&text, "x").unwrap(), "x").unwrap();
    let want = DecoderConfig {
        hidden_size: 32,
        patch_size: 16,
        image_size: 256,
        ..DecoderConfig::by_name("XL").unwrap()
    };
    assert_eq!(dec, want);
    let plan = y.plan.clone().unwrap();
    assert!(plan.dit.is_none());
    let spe = 2502;
    assert_eq!(
        plan.lr_schedule(spe, y.lr, y.final_lr, y.warmup_steps)
            .unwrap()
            .unwrap(),
        LrSchedule::stage1_reference(spe).unwrap()
    );
    assert_eq!(plan.total_steps(None, spe), Some(16 * spe));
    // The same through flags: a decoder config file and the stage-1 settings.
    let d = tmp("stage1-flags");
    let dec_json = d.join("dec.json");
    std::fs::write(&dec_json, want.to_json().to_json_string().unwrap()).unwrap();
    let (f, _) = train_args(&[
        "--stage",
        "1",
        "--encoder",
        &enc,
        "--decoder-config",
        dec_json.to_str().unwrap(),
        "--noise-tau",
        "0.8",
        "--batch-size",
        "512",
        "--ema-decay",
        "0.9978",
        "--clip",
        "0",
    ]);
    assert_eq!(
        (f.stage, f.noise_tau, f.batch_size, f.ema_decay, f.clip),
        (y.stage, y.noise_tau, y.batch_size, y.ema_decay, y.clip)
    );
}

#[test]
fn unknown_keys_are_reported_by_path() {
    let d = tmp("unknown");
    let p = d.join("x.yaml");
    std::fs::write(
        &p,
        "misc:\n  num_classes: 10\n  colour: red\ntraining:\n  epochs: 2\n  foo: 1\n  optimizer:\n    lr: 1.0e-3\n    momentum: 0.9\nstage_2:\n  params:\n    input_size: 8\n    hidden_size: [64, 128]\n    num_heads: [4, 4]\n    bar: true\nwhatever: {a: 1}\ngan: {loss: {disc_weight: 0.5, colour: 1}}\n",
    )
    .unwrap();
    let c = RefConfig::load(&p).unwrap();
    assert_eq!(
        c.unknown_keys(),
        vec![
            "misc.colour",
            "training.foo",
            "training.optimizer.momentum",
            "stage_2.params.bar",
            "whatever",
            "gan.loss.colour"
        ]
    );
    let notes = c.notes().unwrap();
    assert!(notes
        .iter()
        .any(|n| n == &format!("config {}: unknown key training.foo", p.display())));
    // Through the binary: one warning line per key, before the run (which then fails for
    // want of a RAE and names it).
    let err = fails(&[
        "train",
        "--config",
        p.to_str().unwrap(),
        "--out",
        d.join("out").to_str().unwrap(),
        "--encoder",
        d.join("no-encoder").to_str().unwrap(),
    ]);
    for k in [
        "misc.colour",
        "training.foo",
        "stage_2.params.bar",
        "whatever",
    ] {
        assert!(
            err.contains(&format!("config {}: unknown key {k}", p.display())),
            "{err}"
        );
    }
    assert!(err.contains("no-encoder"), "{err}");
}

#[test]
fn bad_values_and_hub_ids_give_named_errors() {
    let d = tmp("bad-values");
    let write = |name: &str, text: &str| -> String {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    // A HuggingFace hub id that no cache holds, offline: named (run as a process so that
    // nothing can be downloaded; tests/hub.rs resolves such ids from a cache).
    let empty = d.join("empty-hf-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rae-cli"))
        .args(["--backend", "cpu", "sample", "--config", &cfg_path(AG)])
        .env("HF_HUB_CACHE", &empty)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("stage_1.params.encoder_params.dinov2_path")
            && e.contains("facebook/dinov2-with-registers-base")
            && e.contains("HuggingFace")
            && e.contains("--encoder"),
        "{e}"
    );
    for (text, want) in [
        ("sampler:\n  mode: XYZ\n", "sampler.mode"),
        (
            "sampler:\n  mode: ODE\n  params:\n    sampling_method: dopri5\n",
            "dopri5",
        ),
        ("guidance:\n  method: magic\n", "guidance.method"),
        ("transport:\n  params:\n    path_type: GVP\n", "transport.params.path_type"),
        ("sampler:\n  params:\n    num_steps: many\n", "sampler.params.num_steps"),
        ("stage_2:\n  params:\n    input_size: 8\n    hidden_size: [64, 128]\n    num_heads: [4, 4]\n    use_qknorm: true\n", "use_qknorm"),
        ("stage_2:\n  ckpt: /nonexistent/model.pt\n", "stage_2.ckpt"),
        ("guidance:\n  method: autoguidance\n  scale: 1.5\n", "guidance.guidance_model"),
        ("a: [1, 2\n", "not valid YAML"),
    ] {
        let p = write("bad.yaml", text);
        let e = parse_err(&["rae-cli", "sample", "--config", &p, "--rae", "r"]);
        assert!(e.contains(&p) && e.contains(want), "{text:?}: {e}");
    }
    let p = write("t.yaml", "training:\n  scheduler:\n    type: step\n");
    let e = parse_err(&["rae-cli", "train", "--config", &p, "--rae", "r"]);
    assert!(
        e.contains("training.scheduler.type") && e.contains("step"),
        "{e}"
    );
    let p = write("o.yaml", "training:\n  optimizer:\n    betas: [0.9]\n");
    let e = parse_err(&["rae-cli", "train", "--config", &p, "--rae", "r"]);
    assert!(e.contains("training.optimizer.betas"), "{e}");
    let e = parse_err(&["rae-cli", "train", "--config", "/nonexistent/c.yaml"]);
    assert!(e.contains("/nonexistent/c.yaml"), "{e}");
}

/// A tiny trained run (2 decoder steps, 2 DiT steps): enough for sampling from it.
fn tiny_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = tmp("tiny-run");
        ok(&[
            ["train", "--out", out.to_str().unwrap()].as_slice(),
            TINY_RUN,
        ]
        .concat());
        out
    })
}

fn latents(p: &Path) -> Vec<f32> {
    load_tensor_file(p)
        .unwrap()
        .tensors
        .get("latents")
        .unwrap()
        .data
        .clone()
}

#[test]
fn sample_with_a_yaml_config_on_a_tiny_run_equals_the_flags() {
    let run = tiny_run();
    let d = tmp("yaml-tiny");
    // The decoder config as the reference ships it (sizes that the RAE sets itself).
    let dec_dir = d.join("decoder").join("tiny");
    std::fs::create_dir_all(&dec_dir).unwrap();
    std::fs::write(
        dec_dir.join("config.json"),
        r#"{"decoder_hidden_size": 64, "decoder_intermediate_size": 128,
            "decoder_num_attention_heads": 4, "decoder_num_hidden_layers": 2,
            "hidden_size": 768, "image_size": 224, "layer_norm_eps": 1e-12,
            "patch_size": "SHOULD BE RELOADED", "model_type": "vit_mae"}"#,
    )
    .unwrap();
    let dit = presets::tiny_dit(10).to_json().to_json_string().unwrap();
    let r = run.join("rae");
    let ck = run.join("dit-train.safetensors");
    let yaml = format!(
        "stage_1:\n  target: stage1.RAE\n  params:\n    encoder_cls: 'Dinov2withNorm'\n    encoder_config_path: '{enc}'\n    encoder_input_size: 32\n    encoder_params: {{'dinov2_path': '{enc}', 'normalize': True}}\n    decoder_config_path: 'decoder/tiny'\n    decoder_patch_size: 4\n    pretrained_decoder_path: '{dec}'\n    noise_tau: 0.\n    reshape_to_2d: True\n    normalization_stat_path: '{stats}'\nstage_2:\n  target: stage2.models.DDT.DiTwDDTHead\n  params: {dit}\n  ckpt: '{ck}'\ntransport:\n  params:\n    path_type: 'Linear'\n    prediction: 'velocity'\n    time_dist_type: 'uniform'\nsampler:\n  mode: ODE\n  params:\n    sampling_method: 'euler'\n    num_steps: 5\n    atol: 1e-6\n    rtol: 1e-3\n    reverse: False\nguidance:\n  method: 'autoguidance'\n  scale: 1.5\n  t-min: 0.0\n  t-max: 1.0\n  guidance_model:\n    target: stage2.models.DDT.DiTwDDTHead\n    params: {dit}\n    ckpt: '{ck}'\nmisc:\n  latent_size: [32, 8, 8]\n  num_classes: 10\n  time_dist_shift_dim: 2048\n  time_dist_shift_base: 4096\n",
        enc = r.join("encoder").display(),
        dec = r.join("decoder.safetensors").display(),
        stats = r.join("stats.safetensors").display(),
        ck = ck.display(),
    );
    let cfg = d.join("tiny.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (l1, l2) = (d.join("a.safetensors"), d.join("b.safetensors"));
    let log = ok(&[
        "sample",
        "--config",
        cfg.to_str().unwrap(),
        "--classes",
        "0,1",
        "--num",
        "2",
        "--seed",
        "3",
        "--out",
        d.join("out-a").to_str().unwrap(),
        "--save-latents",
        l1.to_str().unwrap(),
    ]);
    assert!(
        log.contains("AutoGuidance") && !log.contains("unknown key"),
        "{log}"
    );
    ok(&[
        "sample",
        "--ckpt",
        ck.to_str().unwrap(),
        "--rae",
        r.to_str().unwrap(),
        "--guidance-model",
        ck.to_str().unwrap(),
        "--cfg-scale",
        "1.5",
        "--steps",
        "5",
        // The YAML's misc.time_dist_shift_base; without it the flag run uses the base the
        // training run recorded in its checkpoint.
        "--shift-base",
        "4096",
        "--classes",
        "0,1",
        "--num",
        "2",
        "--seed",
        "3",
        "--out",
        d.join("out-b").to_str().unwrap(),
        "--save-latents",
        l2.to_str().unwrap(),
    ]);
    let (a, b) = (latents(&l1), latents(&l2));
    assert_eq!(a.len(), 4 * 32 * 64);
    assert_eq!(
        a, b,
        "the YAML run and the flag run sampled different latents"
    );
    assert!(d.join("out-a").join("grid.png").exists());
}

#[test]
fn sample_with_a_yaml_config_reads_a_pytorch_training_checkpoint() {
    // A RAE whose latents are [8, 4, 4], the shape of the fixture DiT-DH.
    let b = rae_core::CpuBackend::new();
    let d = tmp("yaml-pt");
    let rae = common::tiny_rae(&b, 8, 4, 4);
    let rae_dir = d.join("rae");
    common::write_rae_dir(&b, &rae, &rae_dir, true);
    let dit_json = std::fs::read_to_string(fixture("dit_config.json")).unwrap();
    let ckpt = fixture("dit_train_ckpt.pt");
    // JSON is YAML: the constructor arguments go in as they are.
    let yaml = format!(
        "stage_1:\n  params:\n    encoder_config_path: '{enc}'\n    encoder_input_size: 16\n    pretrained_decoder_path: '{dec}'\n    normalization_stat_path: '{stats}'\nstage_2:\n  target: stage2.models.DDT.DiTwDDTHead\n  params: {params}\n  ckpt: '{ckpt}'\nsampler:\n  mode: ODE\n  params:\n    sampling_method: 'euler'\n    num_steps: 4\nguidance:\n  method: 'cfg'\n  scale: 2.0\n  t_min: 0.0\n  t_max: 0.9\nmisc:\n  latent_size: [8, 4, 4]\n  num_classes: 5\n  time_dist_shift_base: 64\n",
        enc = rae_dir.join("encoder").display(),
        dec = rae_dir.join("decoder.safetensors").display(),
        stats = rae_dir.join("stats.safetensors").display(),
        params = dit_json.replace('\n', " "),
        ckpt = ckpt.display(),
    );
    let cfg = d.join("pt.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (l1, l2) = (d.join("a.safetensors"), d.join("b.safetensors"));
    ok(&[
        "sample",
        "--config",
        cfg.to_str().unwrap(),
        "--classes",
        "0,4",
        "--num",
        "2",
        "--seed",
        "5",
        "--out",
        d.join("out-a").to_str().unwrap(),
        "--save-latents",
        l1.to_str().unwrap(),
    ]);
    // The same sampler on the safetensors copy of the EMA weights: the `.pt`'s `ema` half
    // (not its noisier `model` half) was used.
    ok(&[
        "sample",
        "--ckpt",
        fixture("dit.safetensors").to_str().unwrap(),
        "--model",
        fixture("dit_config.json").to_str().unwrap(),
        "--rae",
        rae_dir.to_str().unwrap(),
        "--steps",
        "4",
        "--cfg-scale",
        "2",
        "--cfg-interval",
        "0,0.9",
        "--shift-base",
        "64",
        "--classes",
        "0,4",
        "--num",
        "2",
        "--seed",
        "5",
        "--out",
        d.join("out-b").to_str().unwrap(),
        "--save-latents",
        l2.to_str().unwrap(),
    ]);
    let (a, b2) = (latents(&l1), latents(&l2));
    assert_eq!(a.len(), 4 * 8 * 16);
    assert_eq!(
        a, b2,
        "the .pt checkpoint's EMA weights were not the ones used"
    );
    // The parsed architecture is the fixture's.
    let want =
        DitConfig::from_json(&parse_named(&dit_json, "dit_config.json").unwrap(), "x").unwrap();
    let c = RefConfig::load(&cfg).unwrap();
    assert_eq!(c.dit_config("stage_2.params").unwrap(), Some(want));
}

fn meta_config(p: &Path) -> rae_core::json::JsonValue {
    let f = load_tensor_file(p).unwrap();
    parse_named(f.meta("config").unwrap(), "metadata").unwrap()
}

#[test]
fn train_with_a_yaml_config_uses_its_model_optimizer_schedule_and_epochs() {
    let run = tiny_run();
    let r = run.join("rae");
    let d = tmp("yaml-train");
    let dit = presets::tiny_dit(10).to_json().to_json_string().unwrap();
    // Stage 2: 40 built-in images at batch 8 = 5 steps per epoch, 2 epochs.
    let yaml = format!(
        "stage_1:\n  params:\n    encoder_config_path: '{enc}'\n    pretrained_decoder_path: '{dec}'\n    normalization_stat_path: '{stats}'\nstage_2:\n  params: {dit}\ntransport:\n  params:\n    time_dist_type: 'uniform'\nmisc:\n  time_dist_shift_base: 4096\ntraining:\n  epochs: 2\n  global_batch_size: 8\n  ema_decay: 0.99\n  clip_grad: 0.5\n  global_seed: 11\n  optimizer:\n    lr: 1.0e-3\n    betas: [0.5, 0.9]\n    weight_decay: 0.01\n  scheduler:\n    type: linear\n    warmup_epochs: 1\n    decay_end_epoch: 2\n    base_lr: 1.0e-3\n    final_lr: 1.0e-4\n    warmup_from_zero: true\n",
        enc = r.join("encoder").display(),
        dec = r.join("decoder.safetensors").display(),
        stats = r.join("stats.safetensors").display(),
    );
    let cfg = d.join("s2.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = d.join("s2");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--builtin-size",
        "40",
        "--out",
        out.to_str().unwrap(),
        "--sample-steps",
        "2",
    ]);
    let ck = out.join("dit-train.safetensors");
    assert_eq!(load_tensor_file(&ck).unwrap().meta("step"), Some("10"));
    let m = meta_config(&ck);
    let o = m.get("optimizer").unwrap();
    let num = |k: &str| o.get(k).unwrap().as_f64().unwrap();
    assert_eq!((num("lr"), num("final_lr")), (1e-3, 1e-4));
    assert_eq!((num("warmup_steps"), num("decay_end_step")), (5.0, 10.0));
    assert_eq!(o.get("warmup_from_zero").unwrap().as_bool(), Some(true));
    assert_eq!(o.get("decay").unwrap().as_str(), Some("linear"));
    let betas: Vec<f64> = o
        .get("betas")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(betas, vec![0.5, 0.9f32 as f64]);
    assert!((num("weight_decay") - 0.01).abs() < 1e-9);
    assert!((num("clip") - 0.5).abs() < 1e-7 && (num("ema_decay") - 0.99).abs() < 1e-7);
    assert_eq!(m.get("batch_size").unwrap().as_usize(), Some(8));
    assert_eq!(m.get("seed").unwrap().as_usize(), Some(11));
    assert_eq!(m.get("time_dist").unwrap().as_str(), Some("uniform"));
    let model = DitConfig::from_json(m.get("model").unwrap(), "metadata").unwrap();
    assert_eq!(model, presets::tiny_dit(10));

    // Stage 1: the reference's decoder config rule and the cosine schedule; 16 images at
    // batch 8 = 2 steps per epoch, 1 epoch.
    let dec_dir = d.join("decoder");
    std::fs::create_dir_all(&dec_dir).unwrap();
    std::fs::write(
        dec_dir.join("config.json"),
        r#"{"decoder_hidden_size": 32, "decoder_intermediate_size": 64,
            "decoder_num_attention_heads": 2, "decoder_num_hidden_layers": 1,
            "hidden_size": 768, "image_size": 224, "patch_size": "SHOULD BE RELOADED"}"#,
    )
    .unwrap();
    let yaml1 = format!(
        "stage_1:\n  params:\n    encoder_cls: 'Dinov2withNorm'\n    encoder_config_path: '{enc}'\n    encoder_input_size: 32\n    decoder_config_path: 'decoder'\n    decoder_patch_size: 4\n    noise_tau: 0.5\ntraining:\n  epochs: 1\n  global_batch_size: 8\n  ema_decay: 0.9\n  clip_grad: 0.0\n  optimizer:\n    lr: 2.0e-4\n    betas: [0.9, 0.95]\n  scheduler:\n    type: cosine\n    warmup_epochs: 0.5\n    decay_end_epoch: 1\n    base_lr: 2.0e-4\n    final_lr: 2.0e-5\n    warmup_from_zero: true\ngan:\n  disc: {{arch: {{ks: 9}}}}\n",
        enc = r.join("encoder").display(),
    );
    let cfg1 = d.join("s1.yaml");
    std::fs::write(&cfg1, yaml1).unwrap();
    let out1 = d.join("s1");
    let log = ok(&[
        "train",
        "--config",
        cfg1.to_str().unwrap(),
        "--builtin-size",
        "16",
        "--out",
        out1.to_str().unwrap(),
        "--no-gan",
    ]);
    assert!(log.contains("objective") && !log.contains("LPIPS"), "{log}");
    let ck1 = out1.join("decoder-train.safetensors");
    assert_eq!(load_tensor_file(&ck1).unwrap().meta("step"), Some("2"));
    let m1 = meta_config(&ck1);
    let dec = DecoderConfig::from_json(m1.get("decoder").unwrap(), "metadata").unwrap();
    assert_eq!(
        (
            dec.hidden_size,
            dec.patch_size,
            dec.image_size,
            dec.decoder_hidden_size
        ),
        (32, 4, 32, 32)
    );
    assert_eq!(m1.get("noise_tau").unwrap().as_f64(), Some(0.5));
    let o1 = m1.get("optimizer").unwrap();
    assert_eq!(o1.get("decay").unwrap().as_str(), Some("cosine"));
    assert_eq!(o1.get("warmup_steps").unwrap().as_usize(), Some(1));
    assert!(
        o1.get("clip").unwrap().is_null(),
        "clip_grad 0 disables clipping"
    );
    assert!(out1.join("decoder.safetensors").exists());
}
