//! The sharded latent cache: `encode --out DIR` (f32 and bf16) against the single-file
//! cache, stage-2 training from either (bit-exact), and hostile shards and indices refused
//! with errors naming the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails, ok, tmp};
use rae_cli::store::{load_latents, load_tensor_file, ShardSet};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A RAE folder (16×16 images, latents [8, 4, 4], with statistics), 30 images, and their
/// caches: one file, shards of 7 in f32, shards of 7 in bf16.
fn setup() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let b = rae_core::CpuBackend::new();
        let d = tmp("shards");
        let rae = common::tiny_rae(&b, 8, 4, 4);
        common::write_rae_dir(&b, &rae, &d.join("rae"), true);
        let data = d.join("data");
        ok(&[
            "builtin-data",
            "--out",
            s(&data),
            "--per-class",
            "3",
            "--size",
            "16",
        ]);
        let enc = |out: &str, extra: &[&str]| {
            let mut args = vec![
                "encode",
                "--rae",
                s(&d.join("rae")).to_owned().leak(),
                "--data",
                s(&data).to_owned().leak(),
                "--batch-size",
                "4",
                "--out",
            ];
            let out = d.join(out);
            args.push(s(&out).to_owned().leak());
            args.extend_from_slice(extra);
            ok(&args)
        };
        enc("one.safetensors", &[]);
        let log = enc("f32", &["--shard-size", "7", "--workers", "3"]);
        assert!(log.contains("5 shards of F32"), "{log}");
        enc(
            "bf16",
            &[
                "--shard-size",
                "7",
                "--latent-dtype",
                "bf16",
                "--workers",
                "0",
            ],
        );
        d
    })
}

fn read_all(dir: &Path) -> (Vec<f32>, Vec<u32>) {
    let set = ShardSet::open(dir).unwrap();
    let d: usize = set.dims().iter().product();
    let mut v = vec![0.0; set.len() * d];
    for i in 0..set.len() {
        set.read_into(i, &mut v[i * d..(i + 1) * d]).unwrap();
    }
    (v, (0..set.len()).map(|i| set.label(i)).collect())
}

#[test]
fn shards_hold_the_single_file_latents() {
    let d = setup();
    let one = load_latents(&d.join("one.safetensors")).unwrap();
    let (v, l) = read_all(&d.join("f32"));
    assert_eq!(l, one.labels);
    assert_eq!(v, one.latents, "f32 shards are exact");
    let set = ShardSet::open(&d.join("f32")).unwrap();
    assert_eq!(set.dims(), [8, 4, 4]);
    assert_eq!(set.classes(), 10);
    assert_eq!(set.index().shards.len(), 5);
    assert_eq!(set.index().shards[4].count, 2);
    // bf16: within half an ulp of 8 mantissa bits.
    let (v16, l16) = read_all(&d.join("bf16"));
    assert_eq!(l16, one.labels);
    for (a, b) in v16.iter().zip(&one.latents) {
        assert!(
            (a - b).abs() <= b.abs() * (1.0 / 256.0) + 1e-30,
            "{a} vs {b}"
        );
        assert_eq!(*a, half::bf16::from_f32(*b).to_f32());
    }
}

fn checkpoint(path: &Path) -> Vec<(String, Vec<f32>)> {
    let f = load_tensor_file(path).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = f
        .tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.data.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn train(d: &Path, latents: &Path, out: &str, workers: &str) -> PathBuf {
    let out = d.join(out);
    ok(&[
        "train",
        "--stage",
        "2",
        "--rae",
        s(&d.join("rae")),
        "--latents",
        s(latents),
        "--out",
        s(&out),
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--sample-steps",
        "2",
        "--workers",
        workers,
        "--fresh",
    ]);
    out.join("dit-train.safetensors")
}

#[test]
fn training_on_shards_equals_training_on_the_single_file() {
    let d = setup();
    let a = checkpoint(&train(d, &d.join("one.safetensors"), "t-one", "0"));
    let b = checkpoint(&train(d, &d.join("f32"), "t-f32", "2"));
    let c = checkpoint(&train(d, &d.join("f32"), "t-f32-0", "0"));
    assert!(!a.is_empty());
    assert!(a == b, "sharded (2 workers) differs from the single file");
    assert!(a == c, "sharded (no workers) differs from the single file");
    // Stopped at step 2 and resumed (the loader jumps to the checkpoint's step): the same.
    let out = d.join("t-resume");
    let base = [
        "train",
        "--stage",
        "2",
        "--rae",
        s(&d.join("rae")).to_owned().leak(),
        "--latents",
        s(&d.join("f32")).to_owned().leak(),
        "--out",
        s(&out).to_owned().leak(),
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--sample-steps",
        "2",
        "--workers",
        "2",
    ];
    ok(&[&base[..], &["--fresh", "--stop-at", "2"]].concat());
    ok(&[&base[..], &["--resume"]].concat());
    assert!(
        a == checkpoint(&out.join("dit-train.safetensors")),
        "a resumed run on shards differs"
    );
    // bf16 latents train too (not bit-equal: the values differ by rounding).
    let e = checkpoint(&train(d, &d.join("bf16"), "t-bf16", "2"));
    assert_eq!(e.len(), a.len());
}

/// A copy of the f32 cache to damage.
fn victim(name: &str) -> PathBuf {
    let src = setup().join("f32");
    let dst = tmp(&format!("shard-victim-{name}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

fn edit_index(dir: &Path, f: impl Fn(String) -> String) {
    let p = dir.join("index.json");
    let t = std::fs::read_to_string(&p).unwrap();
    let t2 = f(t.clone());
    assert_ne!(t, t2, "the edit changed nothing");
    std::fs::write(&p, t2).unwrap();
}

fn open_err(dir: &Path) -> String {
    ShardSet::open(dir).unwrap_err().to_string()
}

#[test]
fn hostile_shards_and_indices_give_named_errors() {
    // Truncated shard.
    let d = victim("trunc");
    let sh = d.join("shard-00002.safetensors");
    let bytes = std::fs::read(&sh).unwrap();
    std::fs::write(&sh, &bytes[..bytes.len() - 100]).unwrap();
    let e = open_err(&d);
    assert!(e.contains("shard-00002.safetensors"), "{e}");
    std::fs::write(&sh, &bytes[..5]).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("shard-00002.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // The index names a missing shard.
    let d = victim("missing");
    std::fs::remove_file(d.join("shard-00003.safetensors")).unwrap();
    let e = open_err(&d);
    assert!(e.contains("shard-00003.safetensors"), "{e}");
    // Count mismatch: total, and one shard's.
    let d = victim("count");
    edit_index(&d, |t| t.replacen("\"count\": 30", "\"count\": 31", 1));
    let e = open_err(&d);
    assert!(e.contains("index.json") && e.contains("31"), "{e}");
    let d = victim("count2");
    edit_index(&d, |t| {
        t.replacen("\"count\": 30", "\"count\": 29", 1).replacen(
            "\"count\": 2\n",
            "\"count\": 1\n",
            1,
        )
    });
    let e = open_err(&d);
    assert!(
        e.contains("shard-00004.safetensors") && e.contains("shape"),
        "{e}"
    );
    // Wrong dtype.
    let d = victim("dtype");
    edit_index(&d, |t| t.replace("\"F32\"", "\"BF16\""));
    let e = open_err(&d);
    assert!(
        e.contains("shard-00000.safetensors") && e.contains("BF16"),
        "{e}"
    );
    let d = victim("dtype2");
    edit_index(&d, |t| t.replace("\"F32\"", "\"F64\""));
    assert!(open_err(&d).contains("dtype"));
    // Absurd shapes.
    let d = victim("dims");
    edit_index(&d, |t| {
        let at = t.find("\"dims\"").unwrap();
        let end = at + t[at..].find(']').unwrap() + 1;
        format!(
            "{}\"dims\": [1000000000, 1000000000, 1000]{}",
            &t[..at],
            &t[end..]
        )
    });
    let e = open_err(&d);
    assert!(e.contains("index.json") && e.contains("dims"), "{e}");
    // Labels outside the classes.
    let d = victim("labels");
    edit_index(&d, |t| {
        t.replace("\"num_classes\": 10", "\"num_classes\": 2")
    });
    let e = open_err(&d);
    assert!(
        e.contains("shard-00000.safetensors") && e.contains("label"),
        "{e}"
    );
    // A shard name that leaves the folder.
    let d = victim("escape");
    edit_index(&d, |t| {
        t.replace("shard-00000.safetensors", "../f32/shard-00000.safetensors")
    });
    assert!(open_err(&d).contains("plain file name"));
    // Not an index; no index at all.
    let d = victim("foreign");
    std::fs::write(d.join("index.json"), b"{\"hello\": 1}").unwrap();
    assert!(open_err(&d).contains("not a latent shard index"));
    std::fs::remove_file(d.join("index.json")).unwrap();
    assert!(open_err(&d).contains("not a sharded latent cache"));
    // Through the command line: an error naming the shard, no panic.
    let d = victim("cli");
    let sh = d.join("shard-00001.safetensors");
    let bytes = std::fs::read(&sh).unwrap();
    std::fs::write(&sh, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&[
        "train",
        "--stage",
        "2",
        "--rae",
        s(&setup().join("rae")),
        "--latents",
        s(&d),
        "--out",
        s(&d.join("out")),
        "--max-steps",
        "1",
    ]);
    assert!(e.contains("shard-00001.safetensors"), "{e}");
}

#[test]
fn encode_flags_that_need_a_folder_are_refused_for_a_file() {
    let d = setup();
    let e = fails(&[
        "encode",
        "--rae",
        s(&d.join("rae")),
        "--data",
        s(&d.join("data")),
        "--out",
        s(&d.join("x.safetensors")),
        "--latent-dtype",
        "bf16",
    ]);
    assert!(e.contains("sharded"), "{e}");
}
