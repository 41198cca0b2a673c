//! Mutation fuzzing of the `.pt` reader: the PyTorch-written fixtures (and a few crafted
//! files) are damaged by random byte flips, truncations, insertions, deletions and edits of
//! their length fields, both as whole archives (where the zip reader and its CRC checks
//! stop most damage) and as pickles re-zipped with a valid CRC (which reach the pickle
//! machine and the converter), and so are the legacy-format (torch < 1.6) files, whose
//! pickles and storage records no CRC guards. Each of the three readers must return `Ok` or `Err`, never
//! panic, and finish each case quickly. The case count and seed are fixed so CI time is
//! bounded and failures reproduce; the counts are written to stderr past the test harness's
//! capture, for the CI log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod zipfile;

use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rae_cli::pt::{into_tensors, read_pt, read_pt_layout, read_pt_raw};

/// Cases per fuzz test.
const ARCHIVE_CASES: u32 = 2000;
const PICKLE_CASES: u32 = 2000;

/// No single case may take longer than this (a linear reader takes milliseconds).
const CASE_LIMIT: Duration = Duration::from_secs(5);

/// The fixtures torch wrote that read without error.
const VALID: [&str; 8] = [
    "state_dict_f32",
    "half_bf16",
    "int64",
    "checkpoint_nested",
    "stat",
    "memo_shared",
    "parameters",
    "proto4",
];

/// The legacy-format (torch < 1.6) fixtures torch wrote, all valid: no CRC guards them, so
/// every mutation reaches the pickles and the storage records.
const LEGACY: [&str; 5] = [
    "legacy",
    "legacy_mixed",
    "legacy_proto4",
    "legacy_fid_like",
    "legacy_checkpoint",
];

/// Cases for the legacy files.
const LEGACY_CASES: u32 = 2000;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pt")
        .join(format!("{name}.pt"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[0xa5; 32]),
    )
}

// ---------------------------------------------------------------------------------------
// The zip container, read and written independently of the reader under test.

/// The entries of a stored zip (as torch writes them), found through its central
/// directory.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let mut at = bytes
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 1, 2])
        .unwrap();
    let mut entries = Vec::new();
    while bytes[at..].starts_with(&[0x50, 0x4b, 1, 2]) {
        let size = u32_at(at + 24);
        let (nl, el, cl) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32));
        let local = u32_at(at + 42);
        let name = String::from_utf8(bytes[at + 46..at + 46 + nl].to_vec()).unwrap();
        let start = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        entries.push((name, bytes[start..start + size].to_vec()));
        at += 46 + nl + el + cl;
    }
    entries
}

// ---------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
enum Edit {
    Flip(f64, u8),
    Set(f64, u8),
    Truncate(f64),
    Insert(f64, Vec<u8>),
    Delete(f64, usize),
    /// Overwrite 4 bytes at a position with a little-endian length (a zip size or offset,
    /// a pickle string or memo length).
    Length(f64, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    let lengths = prop_oneof![
        0u32..64,
        Just(u32::MAX),
        Just(0x7FFF_FFFF),
        Just(1 << 20),
        any::<u32>(),
    ];
    // Opcodes of the machine, so insertions reach deeper than random bytes.
    let ops = b"()]}tlduseaqhjr0128NKJMGXQRb.\x80\x85\x86\x87\x88\x89\x8a\x8c\x93\x94\x95";
    prop_oneof![
        3 => (0.0f64..1.0, 1u8..=255).prop_map(|(a, m)| Edit::Flip(a, m)),
        2 => (0.0f64..1.0, any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        1 => (0.5f64..1.0).prop_map(Edit::Truncate),
        2 => (
            0.0f64..1.0,
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..12),
                prop::collection::vec(prop::sample::select(ops.to_vec()), 1..12),
            ]
        )
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        1 => (0.0f64..1.0, 1usize..32).prop_map(|(a, n)| Edit::Delete(a, n)),
        2 => (0.0f64..1.0, lengths).prop_map(|(a, v)| Edit::Length(a, v)),
    ]
}

fn at(len: usize, rel: f64) -> usize {
    ((len as f64 * rel) as usize).min(len.saturating_sub(1))
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match e {
        Edit::Flip(a, m) => {
            let i = at(bytes.len(), *a);
            bytes[i] ^= m;
        }
        Edit::Set(a, b) => {
            let i = at(bytes.len(), *a);
            bytes[i] = *b;
        }
        Edit::Truncate(a) => bytes.truncate((bytes.len() as f64 * a) as usize),
        Edit::Insert(a, ins) => {
            let i = at(bytes.len() + 1, *a);
            bytes.splice(i..i, ins.iter().copied());
        }
        Edit::Delete(a, n) => {
            let i = at(bytes.len(), *a);
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Length(a, v) => {
            let i = at(bytes.len(), *a);
            let end = (i + 4).min(bytes.len());
            let le = v.to_le_bytes();
            bytes[i..end].copy_from_slice(&le[..end - i]);
        }
    }
}

/// Runs all three readers on `file`: no panic, each within [`CASE_LIMIT`], errors naming
/// the file, and the three agreeing on whether the file is valid. Returns whether it was.
fn check_all_readers(file: &[u8]) -> Result<bool, TestCaseError> {
    let mut verdicts = Vec::new();
    for mode in ["read_pt", "read_pt_layout", "read_pt_raw"] {
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| match mode {
            "read_pt" => read_pt(file, "fuzz.pt").map(|v| into_tensors(v).len()),
            "read_pt_layout" => read_pt_layout(file, "fuzz.pt").map(|v| into_tensors(v).len()),
            _ => read_pt_raw(file, "fuzz.pt").map(|v| {
                let ts = into_tensors(v);
                for (_, t) in &ts {
                    assert_eq!(
                        t.data.len(),
                        t.shape.iter().product::<usize>() * t.dtype.size()
                    );
                }
                ts.len()
            }),
        }));
        let elapsed = start.elapsed();
        let result = result.map_err(|_| {
            TestCaseError::fail(format!("{mode} panicked on a {}-byte file", file.len()))
        })?;
        prop_assert!(elapsed < CASE_LIMIT, "{} took {:?}", mode, elapsed);
        if let Err(e) = &result {
            prop_assert!(e.to_string().contains("fuzz.pt"), "{}", e);
        }
        verdicts.push(result.map_err(|e| e.to_string()));
    }
    // The three readers make the same checks; they differ only in what tensor values cost
    // (8 bytes per i64, the stored size raw, nothing for a listing), so where they disagree
    // the one that refused must have refused for the byte budget.
    for v in &verdicts[1..] {
        if v.is_ok() != verdicts[0].is_ok() {
            let refused = if v.is_err() { v } else { &verdicts[0] };
            prop_assert!(
                refused.as_ref().is_err_and(|e| e.contains("limit of")),
                "{:?}",
                verdicts
            );
        }
    }
    Ok(verdicts[0].is_ok())
}

fn report(what: &str, cases: usize, accepted: usize, start: Instant) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "fuzz_pt: {what}: {cases} cases ({accepted} read as valid, the rest refused), none \
         panicked ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn fuzz_whole_archives() {
    let seeds: Vec<Vec<u8>> = VALID.iter().map(|n| fixture(n)).collect();
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..5));
    let (cases, accepted) = (Cell::new(0usize), Cell::new(0usize));
    let start = Instant::now();
    let result = runner(ARCHIVE_CASES).run(&strategy, |(which, edits)| {
        cases.set(cases.get() + 1);
        let mut bytes = seeds[which].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        accepted.set(accepted.get() + usize::from(check_all_readers(&bytes)?));
        Ok(())
    });
    report("whole archives", cases.get(), accepted.get(), start);
    result.unwrap();
}

#[test]
fn fuzz_pickles_behind_a_valid_crc() {
    let seeds: Vec<Vec<(String, Vec<u8>)>> = VALID.iter().map(|n| unzip(&fixture(n))).collect();
    for (name, entries) in VALID.iter().zip(&seeds) {
        // The rebuilt archive must read: the harness itself is sound.
        assert!(read_pt(&zip_of(entries), name).is_ok(), "{name}");
    }
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..5));
    let (cases, accepted) = (Cell::new(0usize), Cell::new(0usize));
    let start = Instant::now();
    let result = runner(PICKLE_CASES).run(&strategy, |(which, edits)| {
        cases.set(cases.get() + 1);
        let mut entries = seeds[which].clone();
        let pkl = entries
            .iter_mut()
            .find(|(n, _)| n.ends_with("/data.pkl"))
            .unwrap();
        for e in &edits {
            apply(&mut pkl.1, e);
        }
        accepted.set(accepted.get() + usize::from(check_all_readers(&zip_of(&entries))?));
        Ok(())
    });
    report("pickles", cases.get(), accepted.get(), start);
    result.unwrap();
}

#[test]
fn fuzz_legacy_files() {
    let seeds: Vec<Vec<u8>> = LEGACY.iter().map(|n| fixture(n)).collect();
    for (name, seed) in LEGACY.iter().zip(&seeds) {
        assert!(read_pt(seed, name).is_ok(), "{name}");
    }
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..5));
    let (cases, accepted) = (Cell::new(0usize), Cell::new(0usize));
    let start = Instant::now();
    let result = runner(LEGACY_CASES).run(&strategy, |(which, edits)| {
        cases.set(cases.get() + 1);
        let mut bytes = seeds[which].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        accepted.set(accepted.get() + usize::from(check_all_readers(&bytes)?));
        Ok(())
    });
    report("legacy files", cases.get(), accepted.get(), start);
    result.unwrap();
}

/// [`zipfile::make_zip`] of owned entries.
fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    zipfile::make_zip(&refs, false)
}
