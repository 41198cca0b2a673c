//! Hostile YAML and images (issue "Untrusted input never aborts the process", cases 3, 5 and
//! the data part of 9): a billion-laughs config, deeply nested YAML, oversized and special
//! files, extremely elongated PNGs, `--image-size 0`, a FIFO given as an image, and corrupt
//! images in a data folder, which `train` must name, every one, before its first step. Each
//! run of the binary has a deadline: a hang fails the test instead of blocking it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::tmp;

/// Runs the binary (CPU backend) with a deadline; returns (success, stderr, seconds). A run
/// past the deadline is killed and fails the test.
fn run_timed(args: &[&str], deadline_s: u64) -> (bool, String, f64) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let log = std::env::temp_dir().join(format!(
        "rae-hostile-{}-{}.log",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rae-cli"))
        .args(["--backend", "cpu"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(deadline_s) {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("rae-cli {args:?} still running after {deadline_s} s (a hang):\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status.success(), err, secs)
}

/// Runs the binary, which must fail cleanly (non-zero exit, no panic, an `error:` line)
/// within `deadline_s`; returns stderr and the seconds it took.
fn fails_within(args: &[&str], deadline_s: u64) -> (String, f64) {
    let (success, err, secs) = run_timed(args, deadline_s);
    assert!(!success, "rae-cli {args:?} should have failed:\n{err}");
    assert!(
        !err.contains("panicked"),
        "rae-cli {args:?} panicked:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "no error line from rae-cli {args:?}:\n{err}"
    );
    (err, secs)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny RAE folder (16×16 images, with statistics) and its decoder config as JSON.
fn rae_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let b = rae_core::CpuBackend::new();
        let d = tmp("hostile-rae");
        let rae = common::tiny_rae(&b, 8, 4, 4);
        common::write_rae_dir(&b, &rae, &d.join("rae"), true);
        let cfg = common::decoder_cfg(8, 4, 4).to_json().to_string();
        std::fs::write(d.join("decoder.json"), cfg).unwrap();
        d
    })
}

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 99]))
        .save(path)
        .unwrap();
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

// ---- YAML ----------------------------------------------------------------------------

#[test]
fn billion_laughs_yaml_is_refused_before_expansion() {
    let d = tmp("laughs");
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    assert!(text.len() < 1024);
    let f = d.join("laughs.yaml");
    std::fs::write(&f, &text).unwrap();
    for cmd in ["train", "sample"] {
        let (err, secs) = fails_within(&[cmd, "--config", s(&f), "--out", s(&d.join("out"))], 20);
        assert!(
            err.contains("laughs.yaml") && err.contains("line 2"),
            "{err}"
        );
        assert!(err.contains("aliases"), "{err}");
        assert!(secs < 10.0, "{cmd}: {secs} s");
    }
    assert!(!d.join("out").exists());
}

#[test]
fn deeply_nested_yaml_is_refused_at_the_depth_limit() {
    let d = tmp("nested");
    let limit = rae_cli::config::MAX_YAML_DEPTH.to_string();
    let cases = [
        ("seq.yaml", format!("{}x\n", "- ".repeat(10_000))),
        (
            "flow.yaml",
            format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "map.yaml",
            (0..200)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>(),
        ),
    ];
    for (name, text) in &cases {
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        let (err, _) = fails_within(&["train", "--config", s(&f)], 20);
        assert!(err.contains(*name), "{err}");
        assert!(
            err.contains(&limit) && err.contains("line "),
            "{name}: {err}"
        );
    }
    // The limit itself still parses (the top-level mapping is one level), one more does not.
    let depth = rae_cli::config::MAX_YAML_DEPTH;
    let nested = |n: usize| format!("x:\n{}1\n", "- ".repeat(n));
    let cfg = rae_cli::config::RefConfig::parse(&nested(depth - 1), Path::new("ok.yaml")).unwrap();
    assert!(cfg.has("x"));
    let err =
        rae_cli::config::RefConfig::parse(&nested(depth), Path::new("deep.yaml")).unwrap_err();
    assert!(err.message().contains("deep.yaml: line 2"), "{err}");
}

#[test]
fn oversized_and_special_config_files_are_refused() {
    let d = tmp("bigcfg");
    let big = d.join("big.yaml");
    let limit = rae_cli::config::MAX_CONFIG_BYTES;
    std::fs::write(&big, "# padding\n".repeat(limit as usize / 10 + 10)).unwrap();
    let (err, _) = fails_within(&["train", "--config", s(&big)], 20);
    assert!(
        err.contains("big.yaml") && err.contains(&limit.to_string()),
        "{err}"
    );
    let fifo = d.join("fifo.yaml");
    mkfifo(&fifo);
    let (err, _) = fails_within(&["sample", "--config", s(&fifo)], 20);
    assert!(err.contains("fifo.yaml") && err.contains("FIFO"), "{err}");
}

// ---- Images --------------------------------------------------------------------------

#[test]
fn elongated_images_are_refused_from_the_header_quickly() {
    let d = tmp("elongated");
    let rae = rae_dir().join("rae");
    for (name, w, h) in [
        ("thin-1x10000.png", 1, 10_000),
        ("thin-2x4000.png", 2, 4000),
    ] {
        let f = d.join(name);
        png(&f, w, h);
        let (err, secs) = fails_within(
            &[
                "encode",
                "--rae",
                s(&rae),
                "--out",
                s(&d.join("lat.safetensors")),
                s(&f),
            ],
            30,
        );
        assert!(
            err.contains(name) && err.contains(&format!("{w}×{h}")),
            "{err}"
        );
        assert!(
            err.contains("aspect ratio") && err.contains("10:1"),
            "{err}"
        );
        std::io::Write::write_fmt(
            &mut std::io::stderr().lock(),
            format_args!("encode of a {w}×{h} PNG: refused in {secs:.2} s\n"),
        )
        .unwrap();
        assert!(secs < 10.0, "{name}: {secs} s");
    }
    // A folder holding such a file stops `train --stage 1` before its first step.
    let data = d.join("data");
    std::fs::create_dir_all(data.join("a")).unwrap();
    png(&data.join("a").join("ok.png"), 20, 16);
    png(&data.join("a").join("thin.png"), 1, 10_000);
    let (err, _) = fails_within(
        &[
            "train",
            "--stage",
            "1",
            "--encoder",
            s(&rae.join("encoder")),
            "--decoder-config",
            s(&rae_dir().join("decoder.json")),
            "--data",
            s(&data),
            "--out",
            s(&d.join("out")),
            "--max-steps",
            "1",
            "--log-every",
            "1",
        ],
        60,
    );
    assert!(
        err.contains("thin.png") && err.contains("aspect ratio"),
        "{err}"
    );
    assert!(!err.contains(" step 1/"), "{err}");
}

/// Whether an error names the image size `size` (the crop's check, or a flag check).
fn named(err: &str, size: &str) -> bool {
    err.contains(&format!("image size {size}")) || err.contains(&format!("--image-size {size}"))
}

#[test]
fn image_size_zero_and_absurd_sizes_are_errors() {
    let d = tmp("size0");
    let rae = rae_dir().join("rae");
    let img = d.join("img.png");
    png(&img, 20, 16);
    let data = d.join("data");
    std::fs::create_dir_all(data.join("a")).unwrap();
    png(&data.join("a").join("x.png"), 20, 16);
    let out = d.join("lat.safetensors");
    for size in ["0", "100000"] {
        let (err, _) = fails_within(
            &[
                "encode",
                "--rae",
                s(&rae),
                "--image-size",
                size,
                "--out",
                s(&out),
                s(&img),
            ],
            30,
        );
        assert!(named(&err, size), "{err}");
        let (err, _) = fails_within(
            &[
                "encode",
                "--rae",
                s(&rae),
                "--image-size",
                size,
                "--data",
                s(&data),
                "--out",
                s(&out),
            ],
            30,
        );
        assert!(named(&err, size), "{err}");
    }
    // The crop itself refuses 0 instead of looping.
    let im = image::RgbImage::new(4, 4);
    assert!(rae_cli::image_io::adm_center_crop(&im, 0).is_err());
    assert_eq!(
        rae_cli::image_io::adm_center_crop(&im, 1)
            .unwrap()
            .dimensions(),
        (1, 1)
    );
}

#[test]
fn a_fifo_given_as_an_image_is_refused_not_waited_on() {
    let d = tmp("fifo-img");
    let fifo = d.join("pipe.png");
    mkfifo(&fifo);
    let rae = rae_dir().join("rae");
    let (err, _) = fails_within(
        &[
            "encode",
            "--rae",
            s(&rae),
            "--out",
            s(&d.join("l.safetensors")),
            s(&fifo),
        ],
        20,
    );
    assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
    // Through a symbolic link too (the link is resolved first).
    #[cfg(unix)]
    {
        let link = d.join("link.png");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let (err, _) = fails_within(
            &[
                "encode",
                "--rae",
                s(&rae),
                "--out",
                s(&d.join("l.safetensors")),
                s(&link),
            ],
            20,
        );
        assert!(err.contains("link.png") && err.contains("FIFO"), "{err}");
    }
}

// ---- The data check ------------------------------------------------------------------

/// A class folder of 16×16 images with four bad files among them; returns the folder and
/// the bad files' names.
fn bad_folder(name: &str) -> (PathBuf, Vec<&'static str>) {
    let d = tmp(name);
    let data = d.join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..6 {
            png(&data.join(class).join(format!("good{i}.png")), 16 + i, 16);
        }
    }
    let good = std::fs::read(data.join("a").join("good0.png")).unwrap();
    std::fs::write(
        data.join("a").join("truncated.png"),
        &good[..good.len() / 2],
    )
    .unwrap();
    std::fs::write(data.join("b").join("garbage.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(data.join("b").join("empty.png"), b"").unwrap();
    png(&data.join("b").join("needle.png"), 1, 10_000);
    (
        data,
        vec!["truncated.png", "garbage.jpg", "empty.png", "needle.png"],
    )
}

#[test]
fn train_names_every_bad_image_before_the_first_step() {
    let (data, bad) = bad_folder("check-train");
    let rae = rae_dir().join("rae");
    let out = data.with_file_name("out");
    let (err, _) = fails_within(
        &[
            "train",
            "--stage",
            "2",
            "--rae",
            s(&rae),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--log-every",
            "1",
        ],
        60,
    );
    let first = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(first.contains("4 of the 16 images"), "{err}");
    for b in &bad {
        assert!(first.contains(b), "{b} not named in the first line:\n{err}");
        assert_eq!(err.matches(b).count(), 2, "{b}:\n{err}");
    }
    assert!(!err.contains(" step 1/"), "{err}");
    assert!(!out.join("dit-train.safetensors").exists());
}

#[test]
fn check_data_only_checks() {
    let (data, bad) = bad_folder("check-only");
    let out = data.with_file_name("out");
    let (err, _) = fails_within(
        &[
            "train",
            "--check-data",
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        30,
    );
    for b in &bad {
        assert!(err.contains(b), "{b}:\n{err}");
    }
    assert!(!out.exists(), "--check-data wrote {}", out.display());
    // Without the bad files the check passes and trains nothing.
    for b in &bad {
        let class = if *b == "truncated.png" { "a" } else { "b" };
        std::fs::remove_file(data.join(class).join(b)).unwrap();
    }
    let (success, err, _) = run_timed(
        &[
            "train",
            "--check-data",
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        30,
    );
    assert!(success, "{err}");
    assert!(
        err.contains("checked 12 images") && err.contains("all readable"),
        "{err}"
    );
    assert!(!out.exists());
    // --check-data needs a folder.
    let (err, _) = fails_within(&["train", "--check-data"], 30);
    assert!(err.contains("--data"), "{err}");
}

#[test]
fn skip_check_leaves_bad_images_to_their_batch() {
    let (data, _) = bad_folder("skip-check");
    let rae = rae_dir().join("rae");
    let (err, _) = fails_within(
        &[
            "train",
            "--stage",
            "2",
            "--rae",
            s(&rae),
            "--data",
            s(&data),
            "--out",
            s(&data.with_file_name("out")),
            "--max-steps",
            "1",
            "--batch-size",
            "16",
            "--skip-check",
        ],
        60,
    );
    assert!(!err.contains("cannot be used"), "{err}");
}
