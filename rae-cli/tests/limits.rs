//! Hostile sizes and values (issue "Untrusted input never aborts the process", cases 1 and
//! 6–9): model sizes from checkpoint metadata, YAML, `--model` and `--decoder-config`;
//! zero and huge numeric flags; non-finite weights, guidance and settings; stale temporary
//! files; errors that name their file. Each must end in one clean `error:` naming the culprit
//! (never a panic, an abort or garbage with exit code 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails, fixture, ok, tmp};
use rae_cli::store::load_tensor_file;
use rae_core::json::{parse_named, JsonValue};

/// The folder with a tiny RAE (`rae/`, latents `[8, 4, 4]`) and a DiT-DH checkpoint in the
/// layout `train` writes (`dit.safetensors` with `config` metadata naming the model and the
/// shift base), built once from the reference fixture.
fn setup() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let b = rae_core::CpuBackend::new();
        let d = tmp("limits");
        let rae = common::tiny_rae(&b, 8, 4, 4);
        common::write_rae_dir(&b, &rae, &d.join("rae"), true);
        write_ckpt(&d.join("dit.safetensors"), &|_| {}, &|_| {});
        d
    })
}

fn dit_config() -> JsonValue {
    let text = std::fs::read_to_string(fixture("dit_config.json")).unwrap();
    parse_named(&text, "dit_config.json").unwrap()
}

fn set(v: &mut JsonValue, key: &str, value: JsonValue) {
    let JsonValue::Object(m) = v else {
        panic!("not an object")
    };
    m.retain(|(k, _)| k != key);
    m.push((key.to_string(), value));
}

/// Writes the fixture DiT's weights to `path` with training metadata; `edit_meta` changes
/// the metadata's `config` object, `edit_weights` the tensors.
fn write_ckpt(
    path: &Path,
    edit_meta: &dyn Fn(&mut JsonValue),
    edit_weights: &dyn Fn(&mut rae_core::nn::HostTensors),
) {
    let mut weights = load_tensor_file(&fixture("dit.safetensors"))
        .unwrap()
        .tensors;
    edit_weights(&mut weights);
    let mut cfg = JsonValue::object([
        ("model", dit_config()),
        ("shift_base", JsonValue::from(64usize)),
        ("sample_cfg", JsonValue::from(1.5)),
    ]);
    edit_meta(&mut cfg);
    let meta = vec![("config".to_string(), cfg.to_json_string().unwrap())];
    rae_cli::store::save_safetensors(path, &weights, &meta).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `sample` of `ckpt` with the tiny RAE and `extra` flags.
fn sample_args(ckpt: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let rae = setup().join("rae");
    let mut v: Vec<String> = [
        "sample",
        "--ckpt",
        s(ckpt),
        "--rae",
        s(&rae),
        "--classes",
        "0,1",
        "--num",
        "1",
        "--steps",
        "3",
        "--out",
        s(out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

#[test]
fn the_unmodified_checkpoint_samples() {
    let d = setup();
    let out = tmp("limits-ok");
    ok(&refs(&sample_args(&d.join("dit.safetensors"), &out, &[])));
    assert!(out.join("grid.png").exists());
}

// Case 1: model sizes from checkpoint metadata are checked before anything is allocated.
#[test]
fn absurd_model_sizes_in_checkpoint_metadata_are_refused() {
    let d = tmp("limits-meta");
    let cases: Vec<(&str, JsonValue)> = vec![
        ("input_size", JsonValue::from(1usize << 40)),
        ("input_size", JsonValue::from(1usize << 20)),
        ("mlp_ratio", JsonValue::from(9007199254740992.0)),
        ("mlp_ratio", JsonValue::from(-4.0)),
        ("class_dropout_prob", JsonValue::from(2.0)),
        ("hidden_size", JsonValue::array([1usize << 20, 64])),
        ("depth", JsonValue::array([1usize << 30, 2])),
        ("num_classes", JsonValue::from(1usize << 40)),
        ("in_channels", JsonValue::from(0usize)),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let ck = d.join(format!("c{i}.safetensors"));
        let v = value.clone();
        write_ckpt(
            &ck,
            &move |c| {
                let JsonValue::Object(m) = c else { panic!() };
                let model = &mut m.iter_mut().find(|(k, _)| k == "model").unwrap().1;
                set(model, key, v.clone());
            },
            &|_| {},
        );
        let err = fails(&refs(&sample_args(&ck, &d.join("out"), &[])));
        let line = error_line(&err);
        assert!(
            line.contains(key) && line.contains(s(&ck)),
            "{key} = {value}: {line}"
        );
    }
}

#[test]
fn a_config_larger_than_its_weights_is_refused_before_allocating() {
    // Valid ranges, but far more parameters than the file holds.
    let d = tmp("limits-params");
    let ck = d.join("big.safetensors");
    write_ckpt(
        &ck,
        &|c| {
            let JsonValue::Object(m) = c else { panic!() };
            let model = &mut m.iter_mut().find(|(k, _)| k == "model").unwrap().1;
            set(model, "hidden_size", JsonValue::array([8192usize, 8192]));
            set(model, "num_heads", JsonValue::array([16usize, 16]));
            set(model, "depth", JsonValue::array([4usize, 2]));
        },
        &|_| {},
    );
    let err = fails(&refs(&sample_args(&ck, &d.join("out"), &[])));
    assert!(error_line(&err).contains("the file holds only"), "{err}");
}

#[test]
fn absurd_sizes_through_yaml_model_json_and_decoder_config_are_refused() {
    let d = tmp("limits-cfg");
    let base = setup();
    // YAML stage_2.params.
    let mut dit = dit_config();
    set(&mut dit, "input_size", JsonValue::from(1usize << 20));
    let yaml = format!(
        "stage_2:\n  target: stage2.models.DDT.DiTwDDTHead\n  params: {}\n",
        dit.to_json_string().unwrap()
    );
    let cfg = d.join("big.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let err = fails(&refs(&sample_args(
        &base.join("dit.safetensors"),
        &d.join("o1"),
        &["--config", s(&cfg)],
    )));
    assert!(error_line(&err).contains("input_size"), "{err}");
    // --model X.json.
    let mut dit = dit_config();
    set(&mut dit, "mlp_ratio", JsonValue::from(9007199254740992.0));
    let model = d.join("model.json");
    std::fs::write(&model, dit.to_json_string().unwrap()).unwrap();
    let err = fails(&refs(&sample_args(
        &base.join("dit.safetensors"),
        &d.join("o2"),
        &["--model", s(&model)],
    )));
    assert!(error_line(&err).contains("mlp_ratio"), "{err}");
    // --decoder-config X.json with an MLP width of 0 and with an absurd image size.
    for (key, value) in [
        ("decoder_intermediate_size", 0usize),
        ("image_size", 1usize << 40),
    ] {
        let mut dec = JsonValue::object([
            ("hidden_size", JsonValue::from(8usize)),
            ("decoder_hidden_size", 16usize.into()),
            ("decoder_num_hidden_layers", 1usize.into()),
            ("decoder_num_attention_heads", 2usize.into()),
            ("decoder_intermediate_size", 32usize.into()),
            ("patch_size", 4usize.into()),
            ("image_size", 16usize.into()),
        ]);
        set(&mut dec, key, JsonValue::from(value));
        let file = d.join(format!("dec-{key}.json"));
        std::fs::write(&file, dec.to_json_string().unwrap()).unwrap();
        let r = base.join("rae");
        let err = fails(&[
            "reconstruct",
            "--encoder",
            s(&r.join("encoder")),
            "--decoder",
            s(&r.join("decoder.safetensors")),
            "--decoder-config",
            s(&file),
            "--stats",
            s(&r.join("stats.safetensors")),
            "--out",
            s(&d.join("o3")),
            s(&fixture("dinov2_png/0.png")),
        ]);
        assert!(error_line(&err).contains(key), "{key}: {err}");
    }
}

// Case 6 and 7: zero and huge numeric flags.
#[test]
fn zero_and_huge_numeric_flags_are_named_errors() {
    let d = tmp("limits-flags");
    let base = setup();
    let rae = base.join("rae");
    let train = |extra: &[&str]| -> String {
        let mut v = vec![
            "train",
            "--rae",
            s(&rae),
            "--builtin-size",
            "20",
            "--max-steps",
            "1",
            "--out",
            s(&d),
        ];
        v.extend_from_slice(extra);
        error_line(&fails(&v)).to_string()
    };
    assert!(train(&["--batch-size", "0"]).contains("--batch-size"));
    assert!(train(&["--stage", "1", "--batch-size", "0"]).contains("--batch-size"));
    assert!(train(&["--batch-size", "1000000000000"]).contains("--batch-size"));
    assert!(train(&["--clip", "NaN"]).contains("--clip"));
    assert!(train(&["--sample-cfg", "NaN"]).contains("--sample-cfg"));
    assert!(train(&["--lr", "inf"]).contains("--lr"));
    assert!(train(&["--ema-decay", "2"]).contains("--ema-decay"));
    assert!(train(&["--log-every", "0"]).contains("--log-every"));
    // YAML global_batch_size: 0.
    let cfg = d.join("bs0.yaml");
    std::fs::write(&cfg, "training:\n  global_batch_size: 0\n").unwrap();
    let line = train(&["--config", s(&cfg)]);
    assert!(line.contains("global_batch_size"), "{line}");

    for (cmd, extra) in [
        (
            "encode",
            vec!["--out", "x.safetensors", "--batch-size", "0"],
        ),
        ("stats", vec!["--out", "x.safetensors", "--batch-size", "0"]),
    ] {
        let mut v = vec![cmd, "--rae", s(&rae)];
        v.extend(extra);
        let err = fails(&v);
        assert!(error_line(&err).contains("--batch-size"), "{cmd}: {err}");
    }
    let ck = base.join("dit.safetensors");
    for (flags, name) in [
        (vec!["--steps", "100000000000"], "--steps"),
        (vec!["--steps", "0"], "--steps"),
        (vec!["--num", "100000000"], "--num"),
        (vec!["--num", "0"], "--num"),
        (vec!["--cfg-scale", "1e30"], "--cfg-scale"),
        (vec!["--cfg-scale", "NaN"], "--cfg-scale"),
        (vec!["--shift-base", "100000000000"], "--shift-base"),
    ] {
        let err = fails(&refs(&sample_args(&ck, &d.join("o"), &flags)));
        assert!(error_line(&err).contains(name), "{flags:?}: {err}");
    }
    // 10 000 samples per class of 128 values fit; 100 000 classes × 100 000 do not.
    let err = fails(&["builtin-data", "--out", s(&d.join("b")), "--size", "100000"]);
    assert!(error_line(&err).contains("--size"), "{err}");
    let err = fails(&["builtin-data", "--out", s(&d.join("b")), "--per-class", "0"]);
    assert!(error_line(&err).contains("--per-class"), "{err}");
}

// Case 8: garbage that used to pass with exit code 0.
#[test]
fn non_finite_weights_are_reported_by_tensor_name() {
    let d = tmp("limits-nan");
    let ck = d.join("nan.safetensors");
    write_ckpt(&ck, &|_| {}, &|w| {
        let mut t = w.get("final_layer.linear.weight").unwrap().clone();
        t.data[3] = f32::NAN;
        w.insert("final_layer.linear.weight", t);
    });
    let err = fails(&refs(&sample_args(&ck, &d.join("out"), &[])));
    let line = error_line(&err);
    assert!(
        line.contains("final_layer.linear.weight") && line.contains("non-finite"),
        "{line}"
    );
    assert!(!d.join("out").join("grid.png").exists());
}

#[test]
fn non_finite_samples_are_an_error_not_black_images() {
    let d = tmp("limits-nan-noise");
    let noise = d.join("noise.safetensors");
    let mut t = rae_core::nn::HostTensors::new();
    let mut data = vec![0.5f32; 2 * 8 * 16];
    data[7] = f32::NAN;
    t.insert(
        "noise",
        rae_core::nn::HostTensor::new(vec![2, 8, 4, 4], data).unwrap(),
    );
    rae_cli::store::save_safetensors(&noise, &t, &[]).unwrap();
    let out = d.join("out");
    let err = fails(&refs(&sample_args(
        &setup().join("dit.safetensors"),
        &out,
        &["--init-noise", s(&noise)],
    )));
    assert!(error_line(&err).contains("non-finite"), "{err}");
    assert!(!out.join("grid.png").exists());
}

#[test]
fn unreadable_sampling_metadata_is_an_error_not_a_default() {
    let d = tmp("limits-shift");
    for (i, bad) in [
        JsonValue::from(-3.0),
        JsonValue::from("4096"),
        JsonValue::from(1e30),
    ]
    .into_iter()
    .enumerate()
    {
        let ck = d.join(format!("s{i}.safetensors"));
        let v = bad.clone();
        write_ckpt(&ck, &move |c| set(c, "shift_base", v.clone()), &|_| {});
        let err = fails(&refs(&sample_args(&ck, &d.join("out"), &[])));
        let line = error_line(&err);
        assert!(
            line.contains("shift_base") && line.contains(s(&ck)),
            "{bad}: {line}"
        );
    }
    let ck = d.join("cfg.safetensors");
    write_ckpt(
        &ck,
        &|c| set(c, "sample_cfg", JsonValue::from(1e300)),
        &|_| {},
    );
    let err = fails(&refs(&sample_args(&ck, &d.join("out"), &[])));
    assert!(error_line(&err).contains("sample_cfg"), "{err}");
}

#[test]
fn invalid_yaml_training_values_are_named() {
    let d = tmp("limits-yaml");
    let rae = setup().join("rae");
    for (yaml, key) in [
        (
            "training:\n  optimizer:\n    betas: 0.9\n",
            "training.optimizer.betas",
        ),
        ("training:\n  clip_grad: .nan\n", "training.clip_grad"),
        ("training:\n  ema_decay: 7\n", "training.ema_decay"),
    ] {
        let cfg = d.join("c.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let err = fails(&[
            "train",
            "--config",
            s(&cfg),
            "--rae",
            s(&rae),
            "--builtin-size",
            "20",
            "--max-steps",
            "1",
            "--out",
            s(&d.join("o")),
        ]);
        assert!(error_line(&err).contains(key), "{yaml}: {err}");
    }
}

// Case 9: smaller ones.
#[test]
fn decode_of_latents_of_the_wrong_shape_names_the_file() {
    let d = tmp("limits-decode");
    let lat = d.join("lat.safetensors");
    let mut t = rae_core::nn::HostTensors::new();
    t.insert(
        "latents",
        rae_core::nn::HostTensor::new(vec![1, 3, 5, 5], vec![0.0; 75]).unwrap(),
    );
    rae_cli::store::save_safetensors(&lat, &t, &[]).unwrap();
    let err = fails(&[
        "decode",
        "--rae",
        s(&setup().join("rae")),
        s(&lat),
        "--out",
        s(&d.join("o")),
    ]);
    let line = error_line(&err);
    assert!(
        line.contains(s(&lat)) && line.contains("[1, 3, 5, 5]"),
        "{line}"
    );
}

#[test]
fn stale_temporary_files_of_killed_writes_are_removed_by_the_next_write() {
    let d = tmp("limits-stale");
    let target = d.join("ckpt.safetensors");
    // A PID above the kernel's maximum (4 194 304) never runs.
    let stale = d.join(".ckpt.safetensors.tmp-4999999");
    let live = d.join(format!(".ckpt.safetensors.tmp-{}", std::process::id()));
    let other = d.join(".other.safetensors.tmp-4999999");
    let foreign = d.join(".ckpt.safetensors.tmp-notapid");
    for p in [&stale, &other, &foreign] {
        std::fs::write(p, b"partial").unwrap();
    }
    // Our own PID's name is the one this write uses; it is replaced, never left behind.
    rae_cli::store::write_atomic(&target, b"new").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert!(!stale.exists(), "stale temporary file kept");
    assert!(!live.exists());
    assert!(
        other.exists(),
        "a temporary file of another name was removed"
    );
    assert!(foreign.exists(), "a file outside our pattern was removed");
}
