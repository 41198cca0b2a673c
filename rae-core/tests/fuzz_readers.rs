//! Mutation fuzzing of the safetensors and JSON readers: valid files (the repository's
//! fixtures and generated ones) are damaged by random byte flips, truncations, insertions,
//! deletions and edits of their length fields and header numbers, and each reader must
//! return `Ok` or `Err`, never panic, and finish each case quickly. The number of cases is
//! fixed (and the seed too, so a failure reproduces) so CI time stays bounded; each test
//! writes the count it ran to stderr, past the test harness's capture, for the CI log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rae_core::json::{self, JsonValue};
use rae_core::safetensors::{serialize, Dtype, Header, SafeTensors, TensorOut};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// Cases per fuzz test.
const SAFETENSORS_CASES: u32 = 2000;
const JSON_CASES: u32 = 2000;

/// No single case may take longer than this (a linear reader takes milliseconds).
const CASE_LIMIT: Duration = Duration::from_secs(5);

/// A runner with a fixed seed, no persistence files and `cases` cases.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[0x5a; 32]),
    )
}

/// One way of damaging a file.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR one byte at a relative position with a non-zero mask.
    Flip(f64, u8),
    /// Overwrite one byte.
    Set(f64, u8),
    /// Keep only a prefix of this relative length.
    Truncate(f64),
    /// Insert bytes at a relative position.
    Insert(f64, Vec<u8>),
    /// Remove up to this many bytes at a relative position.
    Delete(f64, usize),
    /// Replace the 8-byte little-endian length prefix (safetensors) by `delta` added to it,
    /// or by `raw` outright.
    Length { delta: i64, raw: Option<u64> },
    /// Replace the `k`-th run of ASCII digits (a shape, an offset, a number) by `digits`.
    Number(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0.0f64..1.0, 1u8..=255).prop_map(|(a, m)| Edit::Flip(a, m)),
        2 => (0.0f64..1.0, any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        1 => (0.0f64..1.0).prop_map(Edit::Truncate),
        2 => (
            0.0f64..1.0,
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..16),
                prop::collection::vec(prop::sample::select(b"{}[]\",:\\-0123456789eE.".to_vec()), 1..16),
            ]
        )
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        1 => (0.0f64..1.0, 1usize..64).prop_map(|(a, n)| Edit::Delete(a, n)),
        1 => (-64i64..64, prop::option::weighted(0.3, any::<u64>()))
            .prop_map(|(delta, raw)| Edit::Length { delta, raw }),
        3 => (
            0usize..64,
            prop_oneof![
                "[0-9]{1,3}",
                "[0-9]{15,25}",
                Just("-1".to_string()),
                Just("1e308".to_string()),
                Just("9007199254740993".to_string()),
                Just("18446744073709551615".to_string()),
                Just("0.5".to_string()),
            ]
        )
            .prop_map(|(k, d)| Edit::Number(k, d)),
    ]
}

fn at(len: usize, rel: f64) -> usize {
    ((len as f64 * rel) as usize).min(len.saturating_sub(1))
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    match e {
        Edit::Flip(a, m) if !bytes.is_empty() => {
            let i = at(bytes.len(), *a);
            bytes[i] ^= m;
        }
        Edit::Set(a, b) if !bytes.is_empty() => {
            let i = at(bytes.len(), *a);
            bytes[i] = *b;
        }
        Edit::Truncate(a) => bytes.truncate((bytes.len() as f64 * a) as usize),
        Edit::Insert(a, ins) => {
            let i = at(bytes.len() + 1, *a);
            bytes.splice(i..i, ins.iter().copied());
        }
        Edit::Delete(a, n) if !bytes.is_empty() => {
            let i = at(bytes.len(), *a);
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Length { delta, raw } if bytes.len() >= 8 => {
            let old = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            let new = raw.unwrap_or_else(|| old.wrapping_add_signed(*delta));
            bytes[..8].copy_from_slice(&new.to_le_bytes());
        }
        Edit::Number(k, digits) => {
            let mut runs = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i].is_ascii_digit() {
                    let s = i;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    runs.push((s, i));
                } else {
                    i += 1;
                }
            }
            if let Some(&(s, e)) = runs.get(k % runs.len().max(1)) {
                bytes.splice(s..e, digits.bytes());
            }
        }
        _ => {}
    }
}

/// Runs `f` on `input`, failing the case on a panic or when it takes longer than
/// [`CASE_LIMIT`].
fn no_panic_in_time<T>(
    what: &str,
    input: &[u8],
    f: impl FnOnce() -> T,
) -> Result<T, TestCaseError> {
    let start = Instant::now();
    let out = catch_unwind(AssertUnwindSafe(f));
    let elapsed = start.elapsed();
    let out = out.map_err(|_| {
        TestCaseError::fail(format!(
            "{what} panicked on {} bytes: {:?}",
            input.len(),
            shown(input)
        ))
    })?;
    if elapsed > CASE_LIMIT {
        return Err(TestCaseError::fail(format!(
            "{what} took {elapsed:?} on {} bytes",
            input.len()
        )));
    }
    Ok(out)
}

fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned()
}

fn report(what: &str, cases: usize, accepted: usize, start: Instant) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "fuzz_readers: {what}: {cases} cases ({accepted} read as valid, the rest refused), \
         none panicked ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
}

/// Valid safetensors files: every fixture, and a few generated with every dtype, metadata
/// and empty tensors.
fn safetensors_seeds() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                let bytes = std::fs::read(&p).unwrap();
                // Large fixtures make each case slow without reaching new code.
                if bytes.len() <= 1 << 20 {
                    out.push(bytes);
                }
            }
        }
    }
    let mut seeds = Vec::new();
    walk(Path::new(FIXTURES), &mut seeds);
    let raw: Vec<u8> = (0..64).collect();
    let names: Vec<String> = Dtype::ALL.iter().map(|d| format!("t.{d}")).collect();
    let shapes: Vec<[usize; 2]> = Dtype::ALL.iter().map(|d| [2, 8 / d.size()]).collect();
    let outs: Vec<TensorOut<'_>> = Dtype::ALL
        .iter()
        .zip(names.iter().zip(&shapes))
        .map(|(d, (name, shape))| TensorOut::raw(name, shape, *d, &raw[..16]))
        .collect();
    let meta = vec![
        ("format".to_string(), "pt".to_string()),
        ("note".to_string(), "ünïcode \"quoted\"".to_string()),
    ];
    seeds.push(serialize(&outs, &meta).unwrap());
    seeds.push(serialize(&[TensorOut::f32("empty", &[0, 3], &[])], &[]).unwrap());
    seeds.push(serialize(&[TensorOut::i64("scalar", &[], &[-7])], &meta).unwrap());
    assert!(seeds.len() >= 5, "only {} seeds", seeds.len());
    seeds
}

/// Every tensor of a parsed file, read: must not panic, and must agree with the shape.
fn touch(st: &SafeTensors<'_>) -> Result<(), TestCaseError> {
    for t in st.tensors() {
        prop_assert_eq!(t.data.len(), t.numel() * t.dtype.size());
        if let Ok(v) = t.to_f32() {
            prop_assert_eq!(v.len(), t.numel());
        }
        if let Ok(v) = t.to_i64() {
            prop_assert_eq!(v.len(), t.numel());
        }
        prop_assert!(st.get(&t.name).is_some());
    }
    Ok(())
}

#[test]
fn fuzz_safetensors_reader() {
    let seeds = safetensors_seeds();
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..6));
    let start = Instant::now();
    let cases = std::cell::Cell::new(0usize);
    let accepted = std::cell::Cell::new(0usize);
    let result = runner(SAFETENSORS_CASES).run(&strategy, |(which, edits)| {
        cases.set(cases.get() + 1);
        let mut bytes = seeds[which].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let parsed = no_panic_in_time("SafeTensors::parse", &bytes, || {
            SafeTensors::parse(&bytes, "fuzz.safetensors").map(|st| touch(&st))
        })?;
        let parsed_ok = parsed.is_ok();
        accepted.set(accepted.get() + usize::from(parsed_ok));
        match parsed {
            Ok(touched) => touched?,
            Err(e) => prop_assert!(e.to_string().contains("fuzz.safetensors"), "{}", e),
        }
        // The header-only path must agree with the whole-file path.
        let header = no_panic_in_time("Header::parse", &bytes, || {
            let n = Header::declared_len(&bytes, bytes.len() as u64, "fuzz.safetensors")?;
            Header::parse(
                &bytes[8..8 + n],
                (bytes.len() - 8 - n) as u64,
                "fuzz.safetensors",
            )
        })?;
        prop_assert_eq!(header.is_ok(), parsed_ok);
        Ok(())
    });
    report("safetensors", cases.get(), accepted.get(), start);
    result.unwrap();
}

/// Valid JSON texts: every fixture config, every safetensors fixture's header, and values
/// with every kind of token.
fn json_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(Path::new(FIXTURES), &mut files);
    files.sort();
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        if p.extension().is_some_and(|x| x == "json") && bytes.len() <= 1 << 16 {
            seeds.push(bytes);
        } else if p.extension().is_some_and(|x| x == "safetensors") && bytes.len() >= 8 {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            if n <= 1 << 16 && 8 + n <= bytes.len() {
                seeds.push(bytes[8..8 + n].to_vec());
            }
        }
    }
    seeds.push(
        br#"{"a": [1, -2.5e-3, 0, true, false, null, "s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],
             "b": {"c": {"d": [[], {}, [[[]]]]}}, "e": 1E+2, "a": "dup"}"#
            .to_vec(),
    );
    seeds.push(b"[0.1, 123456789012345678901234567890, -0, 1e-400]".to_vec());
    seeds.push(format!("{}{}", "[".repeat(120), "]".repeat(120)).into_bytes());
    assert!(seeds.len() >= 5, "only {} seeds", seeds.len());
    seeds
}

#[test]
fn fuzz_json_reader() {
    let seeds = json_seeds();
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..6));
    let start = Instant::now();
    let cases = std::cell::Cell::new(0usize);
    let accepted = std::cell::Cell::new(0usize);
    let result = runner(JSON_CASES).run(&strategy, |(which, edits)| {
        cases.set(cases.get() + 1);
        let mut bytes = seeds[which].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = no_panic_in_time("json::parse", &bytes, || json::parse(&text))?;
        match parsed {
            Ok(v) => {
                accepted.set(accepted.get() + 1);
                // What parses writes back and parses to the same value.
                let again = no_panic_in_time("JsonValue::to_json_string", &bytes, || {
                    v.to_json_string().map(|s| json::parse(&s))
                })?;
                let again: JsonValue = again.unwrap().unwrap();
                prop_assert_eq!(again, v);
            }
            Err(e) => prop_assert!(e.to_string().contains("at byte"), "{}", e),
        }
        let named = no_panic_in_time("json::parse_named", &bytes, || {
            json::parse_named(&text, "c.json")
        })?;
        if let Err(e) = named {
            prop_assert!(e.to_string().contains("c.json"), "{}", e);
        }
        Ok(())
    });
    report("json", cases.get(), accepted.get(), start);
    result.unwrap();
}
