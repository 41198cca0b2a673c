//! safetensors reading and writing: the reference fixtures, round trips, and rejection of
//! every kind of malformed file with an error naming the file and tensor.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rae_core::safetensors::{serialize, Dtype, Header, SafeTensors, TensorOut, MAX_HEADER_LEN};
use rae_core::Error;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
const NAME: &str = "test.safetensors";

fn read(rel: &str) -> Vec<u8> {
    let p = Path::new(FIXTURES).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn safetensors_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            safetensors_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            out.push(p);
        }
    }
}

/// The header length prefix, read directly (not through the code under test).
fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// A file from a raw header text and a data buffer (no padding: the reader does not need it).
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Parsing `bytes` fails with a Format error from `NAME` whose message contains every
/// string of `needles`.
#[track_caller]
fn rejects(bytes: &[u8], needles: &[&str]) {
    match SafeTensors::parse(bytes, NAME) {
        Ok(st) => panic!("accepted a bad file: {:?}", st.names()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(&e, Error::Format { source, .. } if source == NAME),
                "{e:?}"
            );
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference fixtures.

#[test]
fn every_fixture_parses() {
    // Tensor counts (without __metadata__) taken from the headers with Python's json module.
    let expected = [
        ("decoder.safetensors", 24),
        ("decoder_io.safetensors", 3),
        ("dinov2/model.safetensors", 26),
        ("dinov2_io.safetensors", 2),
        ("dit.safetensors", 58),
        ("dit_grads.safetensors", 52),
        ("dit_io.safetensors", 6),
        ("ode_euler6.safetensors", 4),
    ];
    let mut found = Vec::new();
    safetensors_files(Path::new(FIXTURES), &mut found);
    assert!(found.len() >= expected.len(), "found only {found:?}");
    for (rel, _) in &expected {
        assert!(
            found.iter().any(|p| p.ends_with(rel)),
            "fixture {rel} missing"
        );
    }
    for path in &found {
        let bytes = std::fs::read(path).unwrap();
        let name = path.display().to_string();
        let st = SafeTensors::parse(&bytes, &name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.source(), name);
        if let Some((_, n)) = expected.iter().find(|(rel, _)| path.ends_with(rel)) {
            assert_eq!(st.len(), *n, "{name}");
        }
        // The tensors tile the data buffer exactly.
        let data_len = bytes.len() - 8 - header_len(&bytes);
        let total: usize = st.tensors().iter().map(|t| t.data.len()).sum();
        assert_eq!(total, data_len, "{name}");
        assert_eq!(st.names().len(), st.len());
        for t in st.tensors() {
            assert_eq!(
                t.data.len(),
                t.numel() * t.dtype.size(),
                "{name} {}",
                t.name
            );
            assert_eq!(st.get(&t.name).as_ref(), Some(t));
            if t.dtype.is_float() {
                assert_eq!(t.to_f32().unwrap().len(), t.numel());
                assert!(t.to_i64().is_err());
            } else {
                assert_eq!(t.to_i64().unwrap().len(), t.numel());
                assert!(t.to_f32().is_err());
            }
        }
    }
}

#[test]
fn dit_state_dict_facts() {
    let bytes = read("dit.safetensors");
    let st = SafeTensors::parse(&bytes, "dit.safetensors").unwrap();
    let w = st.get("t_embedder.W").unwrap();
    assert_eq!(w.dtype, Dtype::F32);
    assert_eq!(w.shape, [256]);
    // Offsets [727528, 728552] and header length 5096, read with Python.
    let start = 8 + 5096 + 727528;
    assert_eq!(w.data, &bytes[start..start + 1024]);
    let vals = w.to_f32().unwrap();
    let first = f32::from_le_bytes(bytes[start..start + 4].try_into().unwrap());
    assert_eq!(vals[0].to_bits(), first.to_bits());
    assert_eq!(st.names()[0], "blocks.0.adaLN_modulation.1.bias");
    assert_eq!(st.get("blocks.0.attn.proj.weight").unwrap().shape, [32, 32]);
    assert!(st.get("no.such.tensor").is_none());
    assert!(st.metadata().is_empty());
    match st.tensor("no.such.tensor") {
        Err(Error::MissingTensors { model, names }) => {
            assert_eq!(model, "dit.safetensors");
            assert_eq!(names, ["no.such.tensor"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dit_io_facts() {
    let bytes = read("dit_io.safetensors");
    let st = SafeTensors::parse(&bytes, "dit_io.safetensors").unwrap();
    assert_eq!(st.names(), ["y", "loss", "t", "target", "v", "x"]);
    let y = st.get("y").unwrap();
    assert_eq!(y.dtype, Dtype::I64);
    assert_eq!(y.shape, [3]);
    // The last label is the null class (5 of num_classes = 5).
    assert_eq!(y.to_i64().unwrap(), [1, 4, 5]);
    let x = st.get("x").unwrap();
    assert_eq!(
        (x.dtype, x.shape.as_slice()),
        (Dtype::F32, &[3, 8, 4, 4][..])
    );
    assert_eq!(x.to_shape().unwrap().dims(), [3, 8, 4, 4]);

    // loss = mean((v - target)^2), as the fixture README states.
    let v = st.read_f32("v").unwrap();
    let target = st.read_f32("target").unwrap();
    let loss = st.read_f32("loss").unwrap();
    assert_eq!(loss.len(), 1);
    let mse = v
        .iter()
        .zip(&target)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / v.len() as f64;
    assert!(
        (mse - loss[0] as f64).abs() < 1e-5 * mse.max(1.0),
        "{mse} vs {}",
        loss[0]
    );

    // Wrong-kind reads name the file and the tensor.
    let e = st.read_f32("y").unwrap_err().to_string();
    assert!(
        e.contains("dit_io.safetensors") && e.contains("tensor y") && e.contains("I64"),
        "{e}"
    );
    let e = st.read_i64("x").unwrap_err().to_string();
    assert!(
        e.contains("dit_io.safetensors") && e.contains("tensor x") && e.contains("F32"),
        "{e}"
    );
    let e = y.to_f32().unwrap_err().to_string();
    assert!(e.contains("tensor y"), "{e}");
}

#[test]
fn ode_and_dinov2_facts() {
    let bytes = read("ode_euler6.safetensors");
    let st = SafeTensors::parse(&bytes, "ode_euler6.safetensors").unwrap();
    // shift = sqrt(8*4*4 / 64) per the fixture README.
    let shift = st.read_f32("shift").unwrap();
    assert!((shift[0] - 2f32.sqrt()).abs() < 1e-6, "{shift:?}");
    assert_eq!(st.get("noise").unwrap().shape, [2, 8, 4, 4]);

    let bytes = read("dinov2/model.safetensors");
    let st = SafeTensors::parse(&bytes, "model.safetensors").unwrap();
    assert_eq!(st.metadata(), [("format".to_string(), "pt".to_string())]);
    assert_eq!(st.metadata_value("format"), Some("pt"));
    assert!(!st.names().contains(&"__metadata__"));
    assert_eq!(st.get("embeddings.cls_token").unwrap().shape, [1, 1, 32]);

    // The fixture images hold k/255 values in [0, 1].
    let bytes = read("dinov2_io.safetensors");
    let st = SafeTensors::parse(&bytes, "dinov2_io.safetensors").unwrap();
    let img = st.read_f32("images").unwrap();
    assert_eq!(img.len(), 2 * 3 * 256 * 256);
    for &p in &img {
        let k = p * 255.0;
        assert!(
            (0.0..=255.0).contains(&k) && (k - k.round()).abs() < 1e-3,
            "{p}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

#[test]
fn writer_layout() {
    let a = [1.0f32, -2.5];
    let b = [7i64, -1, i64::MAX];
    let meta = vec![("format".to_string(), "pt".to_string())];
    let bytes = serialize(
        &[TensorOut::f32("a", &[2], &a), TensorOut::i64("b", &[3], &b)],
        &meta,
    )
    .unwrap();
    let n = header_len(&bytes);
    assert_eq!(n % 8, 0, "header padded to a multiple of 8");
    assert_eq!((8 + n) % 8, 0);
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(header.starts_with('{'));
    assert!(header.trim_end().ends_with('}'));
    assert!(header[header.trim_end().len()..].bytes().all(|c| c == b' '));
    assert_eq!(bytes.len(), 8 + n + 8 + 24);
    // Data in the given order, little-endian.
    let data = &bytes[8 + n..];
    assert_eq!(&data[..4], &1.0f32.to_le_bytes());
    assert_eq!(&data[4..8], &(-2.5f32).to_le_bytes());
    assert_eq!(&data[8..16], &7i64.to_le_bytes());
    assert_eq!(&data[24..32], &i64::MAX.to_le_bytes());
    // The header is ordinary JSON with the documented fields.
    let h = rae_core::json::parse(header).unwrap();
    let b_info = h.get("b").unwrap();
    assert_eq!(b_info.get("dtype").unwrap().as_str(), Some("I64"));
    let offs: Vec<usize> = b_info
        .get("data_offsets")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_usize().unwrap())
        .collect();
    assert_eq!(offs, [8, 32]);
    assert_eq!(
        h.get("__metadata__")
            .unwrap()
            .get("format")
            .unwrap()
            .as_str(),
        Some("pt")
    );

    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    assert_eq!(st.names(), ["a", "b"]);
    assert_eq!(st.read_i64("b").unwrap(), b);
    assert_eq!(st.metadata(), meta);
}

#[test]
fn half_precision_rounds_to_nearest_even() {
    // f16 has 10 mantissa bits: the spacing at 1 is 2^-10, so 1 + 2^-11 is a tie that goes to
    // the even neighbour 1, and 1 + 3 * 2^-11 a tie that goes to 1 + 2^-9.
    // bf16 has 7: spacing 2^-7 at 1.
    let p = |e: i32| 2f32.powi(e);
    let xs = [
        1.0,
        1.0 + p(-11),
        1.0 + 3.0 * p(-11),
        1.0 + p(-8),
        1.0 + 3.0 * p(-8),
        65504.0,
        1e6,
        -0.0,
    ];
    let bytes = serialize(
        &[
            TensorOut::f32_as_f16("h", &[8], &xs),
            TensorOut::f32_as_bf16("b", &[2, 4], &xs),
        ],
        &[],
    )
    .unwrap();
    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    let h = st.get("h").unwrap();
    let b = st.get("b").unwrap();
    assert_eq!((h.dtype, b.dtype), (Dtype::F16, Dtype::Bf16));
    assert_eq!(h.data.len(), 16);
    // Raw encodings: 1.0 is 0x3C00 in f16 and 0x3F80 in bf16.
    assert_eq!(&h.data[..2], &0x3C00u16.to_le_bytes());
    assert_eq!(&b.data[..2], &0x3F80u16.to_le_bytes());
    let hv = h.to_f32().unwrap();
    assert_eq!(hv[1], 1.0);
    assert_eq!(hv[2], 1.0 + p(-9));
    assert_eq!(hv[5], 65504.0, "f16 max is exact");
    assert_eq!(hv[6], f32::INFINITY, "1e6 overflows f16");
    assert!(hv[7] == 0.0 && hv[7].is_sign_negative());
    let bv = b.to_f32().unwrap();
    assert_eq!(bv[3], 1.0);
    assert_eq!(bv[4], 1.0 + p(-6));
    assert_eq!(bv[6], 999424.0, "1e6 to 8 significant bits");
}

#[test]
fn writer_rejects_bad_input() {
    let x = [0.0f32; 4];
    let err = |r: rae_core::Result<Vec<u8>>, needle: &str| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    };
    err(
        serialize(
            &[
                TensorOut::f32("w", &[4], &x),
                TensorOut::f32("w", &[2, 2], &x),
            ],
            &[],
        ),
        "w",
    );
    err(serialize(&[TensorOut::f32("w", &[3], &x)], &[]), "w");
    err(serialize(&[TensorOut::f32("w", &[], &x)], &[]), "w");
    err(
        serialize(&[TensorOut::f32("__metadata__", &[4], &x)], &[]),
        "__metadata__",
    );
    err(
        serialize(&[TensorOut::f32("w", &[usize::MAX, 2], &x)], &[]),
        "w",
    );
    let dup = vec![
        ("k".to_string(), "1".to_string()),
        ("k".to_string(), "2".to_string()),
    ];
    err(serialize(&[], &dup), "\"k\"");
    // Nothing at all is a valid (empty) file.
    let empty = serialize(&[], &[]).unwrap();
    assert!(SafeTensors::parse(&empty, NAME).unwrap().is_empty());
}

#[derive(Debug, Clone)]
enum Values {
    F32(Vec<f32>),
    F16(Vec<f32>),
    Bf16(Vec<f32>),
    I64(Vec<i64>),
}

fn arb_f16_range() -> impl Strategy<Value = f32> {
    prop_oneof![
        -70000f32..70000.0,
        -1f32..1.0,
        -1e-4f32..1e-4,
        -1e-7f32..1e-7,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(-0.0f32),
    ]
}

fn arb_bf16_range() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>().prop_filter("not near f32::MAX", |x| x.is_nan() || x.abs() <= 1e38),
        -1f32..1.0,
        Just(f32::NAN),
        Just(f32::NEG_INFINITY),
    ]
}

/// A tensor to write: name, shape and values.
type Spec = (String, Vec<usize>, Values);

fn arb_tensor() -> impl Strategy<Value = Spec> {
    let name = prop_oneof![
        "[a-z_.0-9]{0,12}",
        any::<String>(),
        "[\"\\\\\\u{0}-\\u{1f}é]{1,4}",
    ];
    (name, prop::collection::vec(0usize..=3, 0..=4)).prop_flat_map(|(name, shape)| {
        let n: usize = shape.iter().product();
        let vals = prop_oneof![
            prop::collection::vec(any::<u32>().prop_map(f32::from_bits), n).prop_map(Values::F32),
            prop::collection::vec(arb_f16_range(), n).prop_map(Values::F16),
            prop::collection::vec(arb_bf16_range(), n).prop_map(Values::Bf16),
            prop::collection::vec(any::<i64>(), n).prop_map(Values::I64),
        ];
        (Just(name), Just(shape), vals)
    })
}

fn arb_file() -> impl Strategy<Value = (Vec<Spec>, Vec<(String, String)>)> {
    (
        prop::collection::vec(arb_tensor(), 0..6),
        prop::collection::vec((any::<String>(), any::<String>()), 0..3),
    )
        .prop_map(|(mut ts, mut meta)| {
            let mut seen = HashSet::new();
            ts.retain(|t| t.0 != "__metadata__" && seen.insert(t.0.clone()));
            let mut seen = HashSet::new();
            meta.retain(|m| seen.insert(m.0.clone()));
            (ts, meta)
        })
}

fn outs(ts: &[Spec]) -> Vec<TensorOut<'_>> {
    ts.iter()
        .map(|(name, shape, v)| match v {
            Values::F32(d) => TensorOut::f32(name, shape, d),
            Values::F16(d) => TensorOut::f32_as_f16(name, shape, d),
            Values::Bf16(d) => TensorOut::f32_as_bf16(name, shape, d),
            Values::I64(d) => TensorOut::i64(name, shape, d),
        })
        .collect()
}

/// `got` is `x` rounded to a format with `mant` explicit mantissa bits, whose smallest
/// subnormal spacing is 2^`min_exp`, and whose largest finite value is `max`.
fn rounded_ok(x: f32, got: f32, mant: i32, min_exp: i32, max: f32) -> bool {
    if x.is_nan() {
        return got.is_nan();
    }
    if got.is_infinite() {
        return got.signum() == x.signum() && (x.is_infinite() || x.abs() > max);
    }
    if got == 0.0 && x == 0.0 {
        return got.is_sign_negative() == x.is_sign_negative();
    }
    let err = (got as f64 - x as f64).abs();
    let half_ulp = ((x.abs() as f64) * 2f64.powi(-mant - 1)).max(2f64.powi(min_exp - 1));
    err <= half_ulp && (got == 0.0 || got.signum() == x.signum())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((ts, meta) in arb_file()) {
        let bytes = serialize(&outs(&ts), &meta).unwrap();
        prop_assert_eq!(header_len(&bytes) % 8, 0);
        let st = SafeTensors::parse(&bytes, NAME).unwrap();
        let names: Vec<&str> = ts.iter().map(|t| t.0.as_str()).collect();
        prop_assert_eq!(st.names(), names);
        prop_assert_eq!(st.metadata(), meta.as_slice());
        for (name, shape, vals) in &ts {
            let t = st.get(name).unwrap();
            prop_assert_eq!(&t.shape, shape);
            match vals {
                Values::F32(d) => {
                    prop_assert_eq!(t.dtype, Dtype::F32);
                    let got: Vec<u32> = t.to_f32().unwrap().iter().map(|x| x.to_bits()).collect();
                    let want: Vec<u32> = d.iter().map(|x| x.to_bits()).collect();
                    prop_assert_eq!(got, want);
                }
                Values::F16(d) => {
                    prop_assert_eq!(t.dtype, Dtype::F16);
                    for (&x, g) in d.iter().zip(t.to_f32().unwrap()) {
                        prop_assert!(rounded_ok(x, g, 10, -24, 65504.0), "{} -> {}", x, g);
                    }
                }
                Values::Bf16(d) => {
                    prop_assert_eq!(t.dtype, Dtype::Bf16);
                    for (&x, g) in d.iter().zip(t.to_f32().unwrap()) {
                        prop_assert!(rounded_ok(x, g, 7, -133, 3.3895314e38), "{} -> {}", x, g);
                    }
                }
                Values::I64(d) => {
                    prop_assert_eq!(t.dtype, Dtype::I64);
                    prop_assert_eq!(&t.to_i64().unwrap(), d);
                }
            }
        }
    }

    #[test]
    fn no_truncation_parses((ts, meta) in arb_file(), cut in any::<prop::sample::Index>()) {
        let bytes = serialize(&outs(&ts), &meta).unwrap();
        let at = cut.index(bytes.len());
        let r = SafeTensors::parse(&bytes[..at], NAME);
        prop_assert!(r.is_err(), "a {at}-byte prefix of {} bytes parsed", bytes.len());
        prop_assert!(r.unwrap_err().to_string().contains(NAME));
    }

    #[test]
    fn fixture_truncations_fail(cut in 0usize..5024) {
        let bytes = read("dit_io.safetensors");
        prop_assert_eq!(bytes.len(), 5024);
        let r = SafeTensors::parse(&bytes[..cut], "dit_io.safetensors");
        prop_assert!(r.unwrap_err().to_string().contains("dit_io.safetensors"));
    }

    #[test]
    fn corrupted_bytes_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = read("dit_io.safetensors");
        // Mostly corrupt the prefix and header, where the structure is.
        let at = pos.index(8 + 368 + 16);
        bytes[at] = byte;
        if let Ok(st) = SafeTensors::parse(&bytes, NAME) {
            for t in st.tensors() {
                prop_assert_eq!(t.data.len(), t.numel() * t.dtype.size());
            }
        }
    }
}

#[test]
fn every_truncation_of_a_small_file_fails() {
    let a = [1.0f32, 2.0, 3.0];
    let b = [4i64];
    let c: [f32; 0] = [];
    let bytes = serialize(
        &[
            TensorOut::f32("a", &[3], &a),
            TensorOut::f32("empty", &[0, 2], &c),
            TensorOut::i64("b", &[], &b),
        ],
        &[("k".into(), "v".into())],
    )
    .unwrap();
    assert!(SafeTensors::parse(&bytes, NAME).is_ok());
    for cut in 0..bytes.len() {
        let e = SafeTensors::parse(&bytes[..cut], NAME).unwrap_err();
        assert!(e.to_string().contains(NAME), "{e}");
    }
    // One byte too many is uncovered data.
    let mut longer = bytes.clone();
    longer.push(0);
    rejects(&longer, &["belong to no tensor"]);
}

// ---------------------------------------------------------------------------------------
// Rejection of malformed files.

#[test]
fn rejects_short_file_and_bad_header_length() {
    for n in 0..8 {
        rejects(&vec![0u8; n], &["8-byte"]);
    }
    let good = file(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert!(SafeTensors::parse(&good, NAME).is_ok());

    let mut too_long = good.clone();
    too_long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    rejects(&too_long, &["header length"]);
    let mut absurd = good.clone();
    absurd[..8].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
    rejects(&absurd, &["limit"]);
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    rejects(&huge, &["limit"]);
    // Header length one short cuts the JSON.
    let mut short = good;
    let n = header_len(&short) as u64 - 1;
    short[..8].copy_from_slice(&n.to_le_bytes());
    rejects(&short, &["JSON"]);
}

#[test]
fn rejects_bad_header_text() {
    let mut bytes = file(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    bytes[10] = 0xFF;
    rejects(&bytes, &["UTF-8"]);
    rejects(
        &file(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["JSON"],
    );
    rejects(&file(r#"{"w": }"#, &[]), &["JSON", "byte"]);
    rejects(&file("[1, 2]", &[]), &["not an object"]);
    rejects(&file("\"w\"", &[]), &["not an object"]);
    rejects(
        &file(r#"{"w": [0, 4]}"#, &[]),
        &["tensor w", "not an object"],
    );
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{{\"w\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    rejects(&file(&deep, &[]), &["JSON"]);
}

#[test]
fn rejects_bad_entries() {
    let one = |entry: &str, data: &[u8]| file(&format!("{{\"w\":{entry}}}"), data);
    rejects(
        &one(r#"{"shape":[1],"data_offsets":[0,4]}"#, &[0; 4]),
        &["tensor w", "dtype"],
    );
    rejects(
        &one(r#"{"dtype":"F32","data_offsets":[0,4]}"#, &[0; 4]),
        &["tensor w", "shape"],
    );
    rejects(
        &one(r#"{"dtype":"F32","shape":[1]}"#, &[0; 4]),
        &["tensor w", "data_offsets"],
    );
    rejects(
        &one(
            r#"{"dtype":"F7","shape":[1],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "F7"],
    );
    rejects(
        &one(
            r#"{"dtype":"f32","shape":[1],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "f32"],
    );
    rejects(
        &one(r#"{"dtype":32,"shape":[1],"data_offsets":[0,4]}"#, &[0; 4]),
        &["tensor w", "dtype"],
    );
    rejects(
        &one(r#"{"dtype":"F32","shape":1,"data_offsets":[0,4]}"#, &[0; 4]),
        &["tensor w", "shape"],
    );
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "shape"],
    );
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "shape"],
    );
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#,
            &[0; 4],
        ),
        &["tensor w", "data_offsets"],
    );
    rejects(
        &one(r#"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#, &[0; 4]),
        &["tensor w", "data_offsets"],
    );
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}"#,
            &[0; 4],
        ),
        &["tensor w", "data_offsets"],
    );
    rejects(
        &one(
            r#"{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "twice"],
    );
    // begin > end.
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[1],"data_offsets":[4,0]}"#,
            &[0; 4],
        ),
        &["tensor w", "[4, 0]"],
    );
    // end beyond the data buffer.
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
            &[0; 4],
        ),
        &["tensor w", "4-byte data buffer"],
    );
    // Wrong byte length for the shape.
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#,
            &[0; 8],
        ),
        &["tensor w", "needs 12"],
    );
    rejects(
        &one(
            r#"{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}"#,
            &[0; 4],
        ),
        &["tensor w", "needs 8"],
    );
    // numel × size overflows.
    rejects(
        &one(
            r#"{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}"#,
            &[],
        ),
        &["tensor w", "overflow"],
    );
    // An overflowing shape with a zero in it is a valid empty tensor.
    let empty = one(
        r#"{"dtype":"F64","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}"#,
        &[],
    );
    assert_eq!(
        SafeTensors::parse(&empty, NAME)
            .unwrap()
            .get("w")
            .unwrap()
            .numel(),
        0
    );
}

#[test]
fn rejects_overlaps_gaps_and_duplicates() {
    let f = |body: &str, n: usize| file(&format!("{{{body}}}"), &vec![0u8; n]);
    let e = |name: &str, a: usize, b: usize| {
        format!(
            r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{a},{b}]}}"#,
            (b - a) / 4
        )
    };
    // Sanity: the helper builds valid files.
    assert!(
        SafeTensors::parse(&f(&format!("{},{}", e("a", 0, 8), e("b", 8, 12)), 12), NAME).is_ok()
    );

    rejects(
        &f(&format!("{},{}", e("a", 0, 8), e("b", 4, 12)), 12),
        &["overlap", "tensor a", "tensor b"],
    );
    rejects(
        &f(&format!("{},{}", e("a", 0, 8), e("b", 0, 8)), 8),
        &["overlap"],
    );
    rejects(
        &f(&format!("{},{}", e("a", 0, 4), e("b", 8, 12)), 12),
        &["4..8", "no tensor"],
    );
    rejects(&f(&e("a", 4, 8), 8), &["0..4", "no tensor"]);
    rejects(&f(&e("a", 0, 4), 8), &["4..8", "no tensor"]);
    rejects(&f("", 4), &["0..4", "no tensor"]);
    // A zero-length tensor inside another one's bytes.
    rejects(
        &f(&format!("{},{}", e("a", 0, 8), e("z", 4, 4)), 8),
        &["overlap", "tensor z"],
    );
    // Zero-length tensors at a boundary are fine.
    assert!(SafeTensors::parse(
        &f(
            &format!("{},{},{}", e("z", 0, 0), e("a", 0, 8), e("y", 8, 8)),
            8
        ),
        NAME
    )
    .is_ok());

    rejects(
        &f(&format!("{},{}", e("a", 0, 4), e("a", 4, 8)), 8),
        &["tensor a", "twice"],
    );
}

#[test]
fn rejects_bad_metadata() {
    let t = r#""w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#;
    let f = |meta: &str| file(&format!("{{\"__metadata__\":{meta},{t}}}"), &[7]);
    let st_bytes = f(r#"{"a":"1","b":"x"}"#);
    let st = SafeTensors::parse(&st_bytes, NAME).unwrap();
    assert_eq!(st.metadata_value("b"), Some("x"));
    assert_eq!(st.read_i64("w").unwrap(), [7]);
    rejects(&f(r#"{"a":1}"#), &["__metadata__", "\"a\""]);
    rejects(&f(r#"{"a":null}"#), &["__metadata__"]);
    rejects(&f(r#"["a"]"#), &["__metadata__"]);
    rejects(&f(r#"{"a":"1","a":"2"}"#), &["__metadata__", "twice"]);
    rejects(
        &file(
            &format!("{{\"__metadata__\":{{}},\"__metadata__\":{{}},{t}}}"),
            &[7],
        ),
        &["__metadata__", "twice"],
    );
}

#[test]
fn integer_and_float_decoding() {
    // Hand-built little-endian bytes for every readable dtype, at an odd offset so the
    // slices are unaligned.
    let mut data = vec![0xEEu8]; // one-byte U8 tensor "pad" first
    let mut entries = vec![r#""pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#.to_string()];
    let mut add = |name: &str, dtype: &str, n: usize, bytes: &[u8]| {
        let b = data.len();
        data.extend_from_slice(bytes);
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{n}],"data_offsets":[{b},{}]}}"#,
            data.len()
        ));
    };
    add("i8", "I8", 2, &[0xFF, 0x7F]);
    add("i16", "I16", 1, &[0x00, 0x80]);
    add("i32", "I32", 1, &[0xFE, 0xFF, 0xFF, 0xFF]);
    add("u16", "U16", 1, &[0xFF, 0xFF]);
    add("u32", "U32", 1, &[0xFF, 0xFF, 0xFF, 0xFF]);
    add("u64ok", "U64", 1, &[1, 0, 0, 0, 0, 0, 0, 0]);
    add("u64big", "U64", 1, &[0xFF; 8]);
    add("bool", "BOOL", 2, &[0, 1]);
    add("badbool", "BOOL", 1, &[2]);
    add("f64", "F64", 1, &0.1f64.to_le_bytes());
    add("f16", "F16", 1, &[0x00, 0xC0]); // -2.0
    add("bf16", "BF16", 1, &[0x40, 0x40]); // 3.0
    add("f8", "F8_E4M3", 1, &[0x38]);
    let bytes = file(&format!("{{{}}}", entries.join(",")), &data);
    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    let i = |n: &str| st.read_i64(n);
    assert_eq!(i("pad").unwrap(), [0xEE]);
    assert_eq!(i("i8").unwrap(), [-1, 127]);
    assert_eq!(i("i16").unwrap(), [-32768]);
    assert_eq!(i("i32").unwrap(), [-2]);
    assert_eq!(i("u16").unwrap(), [65535]);
    assert_eq!(i("u32").unwrap(), [4294967295]);
    assert_eq!(i("u64ok").unwrap(), [1]);
    assert!(i("u64big").unwrap_err().to_string().contains("u64big"));
    assert_eq!(i("bool").unwrap(), [0, 1]);
    assert!(i("badbool").unwrap_err().to_string().contains("badbool"));
    assert_eq!(st.read_f32("f64").unwrap(), [0.1f32]);
    assert_eq!(st.read_f32("f16").unwrap(), [-2.0]);
    assert_eq!(st.read_f32("bf16").unwrap(), [3.0]);
    let e = st.read_f32("f8").unwrap_err().to_string();
    assert!(e.contains("f8") && e.contains("F8_E4M3"), "{e}");
    assert!(st.read_i64("f8").is_err());
    assert_eq!(st.get("f8").unwrap().dtype.size(), 1);
}

#[test]
fn dtype_names_and_sizes() {
    let want = [
        ("F64", 8),
        ("F32", 4),
        ("F16", 2),
        ("BF16", 2),
        ("I64", 8),
        ("I32", 4),
        ("I16", 2),
        ("I8", 1),
        ("U8", 1),
        ("BOOL", 1),
        ("U16", 2),
        ("U32", 4),
        ("U64", 8),
        ("F8_E4M3", 1),
        ("F8_E5M2", 1),
    ];
    for (name, size) in want {
        let d = Dtype::from_name(name).unwrap();
        assert_eq!(d.size(), size, "{name}");
        assert_eq!(d.to_string(), name);
    }
    assert_eq!(Dtype::ALL.len(), want.len());
    assert!(Dtype::from_name("F7").is_none());
    assert!(Dtype::from_name("bf16").is_none());
}

// ---------------------------------------------------------------------------------------
// Scale, header-only validation, dtype errors and raw tensors (issue 10).

/// A file of `n` one-element F32 tensors named `layer.<i>.w`, with `m` metadata keys.
fn many_tensors(n: usize, m: usize) -> Vec<u8> {
    let names: Vec<String> = (0..n).map(|i| format!("layer.{i}.w")).collect();
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let outs: Vec<TensorOut<'_>> = names
        .iter()
        .zip(&values)
        .map(|(name, v)| TensorOut::f32(name, &[1], std::slice::from_ref(v)))
        .collect();
    let meta: Vec<(String, String)> = (0..m).map(|i| (format!("k{i}"), i.to_string())).collect();
    serialize(&outs, &meta).unwrap()
}

#[test]
fn two_hundred_thousand_tensors_load_in_linear_time() {
    // Loading used to be quadratic in the number of tensors (173 s for 200k in the release
    // build). The bound below is a guard against that coming back, two orders of magnitude
    // above what a linear reader takes even in the dev profile.
    let bytes = many_tensors(200_000, 50_000);
    let start = std::time::Instant::now();
    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    assert_eq!(st.len(), 200_000);
    assert_eq!(st.metadata().len(), 50_000);
    for i in (0..200_000).step_by(997) {
        let t = st.get(&format!("layer.{i}.w")).unwrap();
        assert_eq!(t.to_f32().unwrap(), [i as f32]);
    }
    assert_eq!(st.names()[199_999], "layer.199999.w");
    let elapsed = start.elapsed();
    let mut err = std::io::stderr().lock();
    use std::io::Write;
    let _ = writeln!(err, "safetensors: 200000 tensors parsed in {elapsed:?}");
    assert!(elapsed.as_secs() < 20, "200k tensors took {elapsed:?}");
}

#[test]
fn header_alone_is_validated_like_the_whole_file() {
    let mut files = Vec::new();
    safetensors_files(Path::new(FIXTURES), &mut files);
    files.sort();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let st = SafeTensors::parse(&bytes, NAME).unwrap();
        // Only the first 8 + N bytes and the file length.
        let n = Header::declared_len(&bytes[..8], bytes.len() as u64, NAME).unwrap();
        let h = Header::parse(&bytes[8..8 + n], (bytes.len() - 8 - n) as u64, NAME).unwrap();
        assert_eq!(h.data_start(), 8 + n);
        assert_eq!(h.tensors().len(), st.len(), "{}", path.display());
        assert_eq!(h.metadata(), st.metadata());
        for (info, view) in h.tensors().iter().zip(st.tensors()) {
            assert_eq!(info.name, view.name);
            assert_eq!((info.dtype, &info.shape), (view.dtype, &view.shape));
            let [b, e] = info.data_offsets;
            assert_eq!(&bytes[8 + n + b..8 + n + e], view.data);
            assert_eq!(h.get(&info.name), Some(info));
        }
    }
    // A data buffer shorter than the header says is the same error as with the bytes.
    let bytes = file(
        r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
        &[1, 2],
    );
    let n = header_len(&bytes);
    let e = Header::parse(&bytes[8..8 + n], 2, NAME)
        .unwrap_err()
        .to_string();
    assert_eq!(e, SafeTensors::parse(&bytes, NAME).unwrap_err().to_string());
    assert!(e.contains("tensor w") && e.contains("reach past"), "{e}");
    let e = Header::declared_len(&bytes[..8], 30, NAME)
        .unwrap_err()
        .to_string();
    assert!(e.contains(NAME) && e.contains("truncated"), "{e}");
}

#[test]
fn dtype_errors_name_the_file_and_the_tensor() {
    let bytes = file(
        concat!(
            r#"{"u64":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},"#,
            r#""flag":{"dtype":"BOOL","shape":[2],"data_offsets":[8,10]},"#,
            r#""f8":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[10,11]}}"#
        ),
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 7, 0x3C],
    );
    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    // Through the view, not only through SafeTensors::read_*.
    for (name, needle) in [
        ("u64", "does not fit"),
        ("flag", "not 0 or 1"),
        ("f8", "F8_E5M2"),
    ] {
        let view = st.get(name).unwrap();
        assert_eq!(&*view.source, NAME);
        let e = view.to_i64().unwrap_err();
        assert!(
            matches!(&e, Error::Format { source, .. } if source == NAME),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("tensor {name}")) && msg.contains(needle),
            "{msg}"
        );
        let msg = view.to_f32().unwrap_err().to_string();
        assert!(
            msg.contains(NAME) && msg.contains(&format!("tensor {name}")),
            "{msg}"
        );
    }
}

#[test]
fn raw_tensors_keep_their_dtype_and_bytes() {
    let u8s: Vec<u8> = (0..=255).collect();
    let halves = [0x00u8, 0x3C, 0x00, 0xC0];
    let outs = [
        TensorOut::raw("u8", &[16, 16], Dtype::U8, &u8s),
        TensorOut::raw("h", &[2], Dtype::F16, &halves),
        TensorOut::f32("f", &[1], &[0.5]),
    ];
    let bytes = serialize(&outs, &[]).unwrap();
    let st = SafeTensors::parse(&bytes, NAME).unwrap();
    let u = st.get("u8").unwrap();
    assert_eq!((u.dtype, u.data), (Dtype::U8, u8s.as_slice()));
    assert_eq!(st.read_f32("h").unwrap(), [1.0, -2.0]);
    // Bytes that are not a whole number of elements, or disagree with the shape.
    let e = serialize(&[TensorOut::raw("x", &[1], Dtype::I32, &[0; 3])], &[]).unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    let e = serialize(&[TensorOut::raw("x", &[2], Dtype::I32, &[0; 4])], &[]).unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
}
