//! The settled runs: every default decided once from flags, YAML plan and presets, and
//! recorded in the checkpoint metadata (the keys resume and `sample` read, plus `run.`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rae_cli::cli::Command;
use rae_cli::config::{parse_args, Stage2Data, TrainMode, TrainRun};
use rae_cli::presets;

fn train_run(args: &[&str]) -> TrainRun {
    let mut argv = vec!["rae-cli", "train"];
    argv.extend_from_slice(args);
    let (cli, _) = parse_args(argv).unwrap();
    let Command::Train(a) = cli.command else {
        panic!("not train")
    };
    TrainRun::settle(a).unwrap()
}

#[test]
fn pipeline_defaults_are_the_tiny_presets() {
    const NAME: &str = "runs-pipeline";
    let out = common::tmp(NAME).join("run");
    let run = train_run(&["--out", out.to_str().unwrap()]);
    assert_eq!(run.mode, TrainMode::Pipeline);
    let s1 = run.stage1(presets::tiny_decoder(), 2000).unwrap();
    assert_eq!((s1.batch_size, s1.steps), (32, 800));
    assert_eq!(s1.optimizer.schedule.base_lr, 1e-3);
    assert_eq!(s1.final_path, out.join("rae").join("decoder.safetensors"));
    let s2 = run
        .stage2(Stage2Data {
            latent: [32, 8, 8],
            items: 2000,
            classes: 10,
            images: true,
        })
        .unwrap();
    assert!(s2.tiny && s2.builtin);
    assert_eq!((s2.batch_size, s2.steps, s2.shift_base), (16, 3000, 43));
    assert_eq!(s2.preview.guidance_scale, 3.0);
    assert_eq!(s2.optimizer.ema_decay, 0.995);
    let meta = s2.to_metadata().unwrap();
    let get = |k: &str| meta.iter().find(|(m, _)| m == k).map(|(_, v)| v.as_str());
    assert_eq!(get("format"), Some("rae-train"));
    assert_eq!(get("kind"), Some("dit"));
    assert!(get("config").unwrap().contains("\"shift_base\":43"));
    assert_eq!(get("run.batch_size"), Some("16"));
    assert_eq!(get("run.steps"), Some("3000"));
    assert_eq!(get("run.mode"), Some("pipeline"));
    assert!(s2.to_string().starts_with("stage 2 settings:"));
}

#[test]
fn flags_win_over_presets() {
    const NAME: &str = "runs-flags";
    let out = common::tmp(NAME).join("run");
    let run = train_run(&[
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "7",
        "--shift-base",
        "0",
        "--sample-cfg",
        "1.5",
        "--lr",
        "1e-4",
    ]);
    let s2 = run
        .stage2(Stage2Data {
            latent: [32, 8, 8],
            items: 100,
            classes: 10,
            images: true,
        })
        .unwrap();
    assert_eq!((s2.batch_size, s2.steps, s2.shift_base), (4, 7, 0));
    assert_eq!(s2.flow.shift, 1.0);
    assert_eq!(s2.preview.guidance_scale, 1.5);
    assert_eq!(s2.optimizer.schedule.base_lr, 1e-4);
    assert_eq!(s2.files.stop, 7);
}
