//! Mutation fuzzing of two readers of untrusted input (issue "Untrusted input never aborts
//! the process"): the YAML config reader (`RefConfig::parse`, and `--config` applied to
//! `train` and `sample` through `parse_args`) and the image header check and decoder
//! (`header_dims`, `decode_rgb`, then the centre crop). Proptest mutates valid inputs — the
//! reference's configs in `tests/fixtures/configs`, a PNG and a JPEG made here — by flipping,
//! inserting (YAML syntax: anchors, aliases, tags, brackets, indentation), deleting,
//! truncating and duplicating, and every case must end in `Ok` or a clean `Err`: never a
//! panic (each case runs under `catch_unwind`) and never a hang (each case runs on a thread
//! with a deadline). The case counts are written past the test harness's capture so CI logs
//! show them; `RAE_FUZZ_CASES` raises them for a longer local run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The deadline of one case (a parse or decode of a few kilobytes takes microseconds).
const CASE_DEADLINE: Duration = Duration::from_secs(10);

fn cases(default: u32) -> u32 {
    std::env::var("RAE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes a line past the harness's capture.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs `f` on a thread under `catch_unwind` with a deadline; a panic or a hang fails the
/// case with `what` (the input, shortened) in the message.
fn guarded<F: FnOnce() + Send + 'static>(what: String, f: F) -> Result<(), TestCaseError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(CASE_DEADLINE) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TestCaseError::fail(format!("panicked on {what}"))),
        Err(_) => Err(TestCaseError::fail(format!(
            "no result within {CASE_DEADLINE:?} on {what}"
        ))),
    }
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Op {
    /// XOR a byte.
    Flip(usize, u8),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Delete up to `n` bytes.
    Delete(usize, usize),
    /// Keep only the first bytes.
    Truncate(usize),
    /// Repeat the line at a position `n` times.
    DupLine(usize, usize),
    /// Overwrite 4 bytes with a big-endian integer (image sizes in headers).
    SetU32(usize, u32),
}

fn apply(bytes: &mut Vec<u8>, op: &Op) {
    let n = bytes.len();
    let at = |p: usize| if n == 0 { 0 } else { p % (n + 1) };
    match op {
        Op::Flip(p, x) if n > 0 => bytes[p % n] ^= (*x).max(1),
        Op::Flip(..) => {}
        Op::Insert(p, ins) => {
            let p = at(*p);
            bytes.splice(p..p, ins.iter().copied());
        }
        Op::Delete(p, k) => {
            let p = at(*p);
            let e = (p + k).min(n);
            bytes.drain(p..e);
        }
        Op::Truncate(p) => bytes.truncate(at(*p)),
        Op::DupLine(p, times) => {
            let p = at(*p).min(n);
            let s = bytes[..p]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let e = bytes[p..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(n, |i| p + i + 1);
            let line = bytes[s..e].to_vec();
            for _ in 0..*times {
                bytes.splice(e..e, line.iter().copied());
            }
        }
        Op::SetU32(p, v) if n >= 4 => {
            let p = p % (n - 3);
            bytes[p..p + 4].copy_from_slice(&v.to_be_bytes());
        }
        Op::SetU32(..) => {}
    }
}

/// YAML fragments worth inserting: structure, anchors and aliases, tags, odd scalars.
const YAML_TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "&b [*a, *a]",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "\n",
    "  ",
    "\t",
    "? ",
    "!!int ",
    "!!float ",
    "!!str ",
    "!!bool ",
    "!!null ",
    "!x ",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "<<: *a\n",
    "#",
    "1e400",
    ".nan",
    "-.inf",
    "0x7fffffffffffffff",
    "~",
    "\u{feff}",
    "\\",
    "\"\\u0000\"",
    "99999999999999999999",
    "-1",
    "1e12",
    "stage_2:\n  params:\n    depth: ",
    "training:\n  global_batch_size: ",
];

fn yaml_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, x)| Op::Flip(p, x)),
        (any::<usize>(), prop::sample::select(YAML_TOKENS))
            .prop_map(|(p, t)| Op::Insert(p, t.as_bytes().to_vec())),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, v)| Op::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, k)| Op::Delete(p, k)),
        any::<usize>().prop_map(Op::Truncate),
        (any::<usize>(), 1usize..4).prop_map(|(p, t)| Op::DupLine(p, t)),
    ]
}

fn image_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(p, x)| Op::Flip(p, x)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Op::Insert(p, v)),
        1 => (any::<usize>(), 1usize..256).prop_map(|(p, k)| Op::Delete(p, k)),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => (any::<usize>(), any::<u32>()).prop_map(|(p, v)| Op::SetU32(p, v)),
        // Header fields: PNG width and height (bytes 16..24), JPEG SOF sizes nearby.
        2 => (16usize..24, prop_oneof![0u32..40, any::<u32>()]).prop_map(|(p, v)| Op::SetU32(p, v)),
    ]
}

/// The reference configs, as (path relative to `configs/`, bytes).
fn fixture_configs() -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let root = common::fixture("configs");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    assert!(out.len() >= 3, "the reference configs are missing");
    out
}

/// A scratch copy of the configs' surroundings (`configs/decoder/...`), so that mutants
/// written into it resolve their relative paths as the originals do.
fn scratch_configs() -> PathBuf {
    let dir = common::tmp("fuzz-yaml").join("configs");
    let src = common::fixture("configs/decoder/ViTXL/config.json");
    let dst = dir.join("decoder/ViTXL/config.json");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
    dir
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Rewrites the CRC of every complete PNG chunk, so a mutation reaches the decoder instead
/// of stopping at the checksum.
fn fix_png_crcs(bytes: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|e| e + 4 <= bytes.len()) else {
            break;
        };
        let crc = crc32(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

fn has_bad_value(y: &yaml_rust2::Yaml) -> bool {
    use yaml_rust2::Yaml;
    match y {
        Yaml::BadValue => true,
        Yaml::Array(v) => v.iter().any(has_bad_value),
        Yaml::Hash(h) => h.iter().any(|(k, v)| has_bad_value(k) || has_bad_value(v)),
        _ => false,
    }
}

fn shorten(bytes: &[u8]) -> String {
    let t = String::from_utf8_lossy(bytes);
    let t: String = t.chars().take(400).collect();
    format!("{t:?} ({} bytes)", bytes.len())
}

#[test]
fn yaml_config_reader_survives_mutations() {
    // The reference configs name their encoder by hub id: never download in a test (a
    // cache that holds nothing, offline). Set before any thread of this test reads it.
    std::env::set_var("HF_HUB_CACHE", common::tmp("fuzz-yaml-hf-cache"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let bases = fixture_configs();
    let dir = scratch_configs();
    let n = cases(2000);
    static PARSED: AtomicUsize = AtomicUsize::new(0);
    static SAME: AtomicUsize = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let start = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..bases.len(),
        prop::collection::vec(yaml_op(), 1..6),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(base, ops, sample)| {
            let (path, bytes) = &bases[base];
            let mut bytes = bytes.clone();
            ops.iter().for_each(|op| apply(&mut bytes, op));
            let i = ran.fetch_add(1, Ordering::Relaxed);
            // The reader of text, then the whole `--config` path from a file beside where
            // the original would be (so its relative paths resolve the same way).
            let file = dir.join(path).with_file_name(format!("fuzz-{i}.yaml"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &bytes).unwrap();
            let f = file.clone();
            let r = guarded(shorten(&bytes), move || {
                let text = String::from_utf8_lossy(&bytes);
                // Where yaml-rust2's own loader is safe to call (no alias, shallow), the
                // event-built document is the one it builds.
                if !text.contains('*') && text.len() < 64 * 1024 {
                    let want = yaml_rust2::YamlLoader::load_from_str(&text);
                    let got = rae_cli::config::yaml::parse_documents(&text, "fuzz");
                    match (got, want) {
                        // yaml-rust2's loader takes a BadValue key (a failed `!!int` tag)
                        // for "no key yet" and shifts the mapping; ours keeps it in place.
                        // The shift can also pair two later keys into a duplicate, which
                        // it then refuses (seen with `!!bool patch_size: 1`), so its result
                        // is not an oracle for such a document, Ok or Err.
                        (Ok(got), _) if got.iter().any(has_bad_value) => {}
                        (Ok(got), Ok(want)) => {
                            assert_eq!(got, want, "{text:?}");
                            SAME.fetch_add(1, Ordering::Relaxed);
                        }
                        (Err(_), Err(_)) => {}
                        (got, want) => panic!("{text:?}: {got:?} but yaml-rust2 {want:?}"),
                    }
                }
                if let Ok(cfg) = rae_cli::config::RefConfig::parse(&text, &f) {
                    let _ = cfg.notes();
                    PARSED.fetch_add(1, Ordering::Relaxed);
                }
                let cmd = if sample { "sample" } else { "train" };
                let _ =
                    rae_cli::config::parse_args(["rae-cli", cmd, "--config", f.to_str().unwrap()]);
            });
            let _ = std::fs::remove_file(&file);
            r
        })
        .unwrap();
    report(&format!(
        "fuzz yaml config reader: {} cases ({} parsed, the rest clean errors; {} documents equal to yaml-rust2's loader) in {:.1} s, no panic, no hang",
        ran.load(Ordering::Relaxed),
        PARSED.load(Ordering::Relaxed),
        SAME.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    ));
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(23, 17, |x, y| {
        image::Rgb([(x * 11) as u8, (y * 13) as u8, ((x + y) * 5) as u8])
    });
    let mut out = Vec::new();
    match format {
        image::ImageFormat::Png => image::DynamicImage::ImageRgb8(img)
            .to_luma_alpha16()
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap(),
        _ => img
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap(),
    }
    out
}

#[test]
fn image_header_check_and_decoder_survive_mutations() {
    use rae_cli::image_io::{adm_center_crop, decode_rgb, header_dims};
    let rgb_png = {
        let mut out = Vec::new();
        image::RgbImage::from_fn(9, 14, |x, y| image::Rgb([x as u8 * 20, y as u8 * 9, 7]))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let bases = [
        rgb_png,
        encoded(image::ImageFormat::Png),
        encoded(image::ImageFormat::Jpeg),
    ];
    for b in &bases {
        let (w, h) = header_dims(b, "base").unwrap();
        let img = decode_rgb(b, "base").unwrap();
        assert_eq!(img.dimensions(), (w, h));
    }
    let n = cases(2000);
    static DECODED: AtomicUsize = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let start = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..bases.len(),
        prop::collection::vec(image_op(), 1..5),
        1u32..48,
        any::<bool>(),
    );
    runner
        .run(&strategy, |(base, ops, size, fix_crcs)| {
            let mut bytes = bases[base].clone();
            ops.iter().for_each(|op| apply(&mut bytes, op));
            if fix_crcs && bytes.starts_with(b"\x89PNG") {
                fix_png_crcs(&mut bytes);
            }
            ran.fetch_add(1, Ordering::Relaxed);
            let what = format!("{} bytes from base {base} after {ops:?}", bytes.len());
            guarded(what, move || {
                let header = header_dims(&bytes, "fuzz");
                if let Ok(img) = decode_rgb(&bytes, "fuzz") {
                    // A decoded image passed the header check, with the same size.
                    assert_eq!(header.ok(), Some(img.dimensions()));
                    let crop = adm_center_crop(&img, size).unwrap();
                    assert_eq!(crop.dimensions(), (size, size));
                    DECODED.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .unwrap();
    report(&format!(
        "fuzz image header check and decoder: {} cases ({} decoded and cropped, the rest clean errors) in {:.1} s, no panic, no hang",
        ran.load(Ordering::Relaxed),
        DECODED.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    ));
}
