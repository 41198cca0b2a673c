//! Tests of the `.pt` reader against files written by PyTorch itself
//! (`tests/fixtures/pt/`, made by `tools/make_pt_fixtures.py`, each with the expected values
//! computed by torch in `NAME.expected.json`), hand-crafted archives for the paths torch
//! does not produce on this machine (big-endian byte order, ZIP64 records, corrupt views),
//! and property tests that no truncation or corruption makes the reader panic.

#![allow(clippy::unwrap_used)]

#[path = "pt/legacy.rs"]
mod legacy;
mod zipfile;

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use rae_cli::pt::{
    flatten_tensors, into_tensors, looks_like_pt, read_pt, read_pt_file, read_pt_layout,
    read_pt_raw, select_state_dict, PtData, PtDtype, PtValue, STATE_DICT_KEYS,
};
use rae_core::Error;
use zipfile::make_zip;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pt")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

// ---------------------------------------------------------------------------------------
// A small JSON reader for the expected-value files (numbers are kept as text so integers
// and bit patterns parse exactly).

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing data in JSON");
        v
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn num<T: std::str::FromStr>(&self) -> T
    where
        T::Err: std::fmt::Debug,
    {
        match self {
            Json::Num(n) => n.parse().unwrap(),
            other => panic!("not a number: {other:?}"),
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s[self.i], c,
            "JSON: expected {:?} at {}",
            c as char, self.i
        );
        self.i += 1;
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'"' | b'\\' | b'/' => out.push(e as char),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            out.push(
                                char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap(),
                            );
                        }
                        _ => panic!("JSON escape {e}"),
                    }
                }
                _ => {
                    // Copy a whole UTF-8 sequence.
                    let start = self.i - 1;
                    let mut end = self.i;
                    while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[start..end]).unwrap());
                    self.i = end;
                }
            }
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    let k = self.string();
                    self.eat(b':');
                    let v = self.value();
                    m.insert(k, v);
                    self.ws();
                    self.i += 1;
                    if self.s[self.i - 1] == b'}' {
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(a);
                }
                loop {
                    a.push(self.value());
                    self.ws();
                    self.i += 1;
                    if self.s[self.i - 1] == b']' {
                        return Json::Arr(a);
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                Json::Num(
                    std::str::from_utf8(&self.s[start..self.i])
                        .unwrap()
                        .to_string(),
                )
            }
        }
    }
}

fn expected(name: &str) -> Json {
    Json::parse(&std::fs::read_to_string(fixture_path(&format!("{name}.expected.json"))).unwrap())
}

// ---------------------------------------------------------------------------------------
// Comparing a loaded file with its expected values.

/// Non-tensor leaves with dotted names, as the fixture script lists them.
fn flatten_scalars(v: &PtValue, prefix: &str, out: &mut Vec<(String, PtValue)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        PtValue::Tensor(_) => {}
        PtValue::Dict(entries) => {
            for (k, v) in entries {
                flatten_scalars(v, &join(k), out);
            }
        }
        PtValue::List(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_scalars(v, &join(&i.to_string()), out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// Loads fixture `name` and checks every tensor (name, order, dtype, shape, exact values)
/// and every scalar against `name.expected.json`. Returns the loaded value.
fn check_fixture(name: &str) -> PtValue {
    let value = read_pt_file(&fixture_path(&format!("{name}.pt"))).unwrap();
    let exp = expected(name);
    assert!(exp.get("writer").unwrap().str().starts_with("torch "));

    let tensors = flatten_tensors(&value);
    let want = exp.get("tensors").unwrap().arr();
    let got_names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|t| t.get("name").unwrap().str()).collect();
    assert_eq!(got_names, want_names, "{name}: tensor names");
    assert!(!want.is_empty());

    for ((tname, t), w) in tensors.iter().zip(want) {
        let ctx = format!("{name}: {tname}");
        assert_eq!(
            t.dtype.name(),
            w.get("dtype").unwrap().str(),
            "{ctx}: dtype"
        );
        let shape: Vec<usize> = w
            .get("shape")
            .unwrap()
            .arr()
            .iter()
            .map(Json::num)
            .collect();
        assert_eq!(t.shape, shape, "{ctx}: shape");
        match (&t.data, w.get("f32_bits"), w.get("i64")) {
            (PtData::F32(v), Some(bits), None) => {
                let want: Vec<u32> = bits.arr().iter().map(Json::num).collect();
                let got: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{ctx}: values (f32 bits)");
            }
            (PtData::I64(v), None, Some(ints)) => {
                let want: Vec<i64> = ints.arr().iter().map(Json::num).collect();
                assert_eq!(v, &want, "{ctx}: values");
            }
            _ => panic!("{ctx}: data kind differs from the expected file"),
        }
        assert_eq!(t.numel(), shape.iter().product::<usize>());
    }

    let mut scalars = Vec::new();
    flatten_scalars(&value, "", &mut scalars);
    let want = exp.get("scalars").unwrap().arr();
    assert_eq!(scalars.len(), want.len(), "{name}: scalar count");
    for ((sname, v), w) in scalars.iter().zip(want) {
        assert_eq!(sname, w.get("name").unwrap().str(), "{name}: scalar names");
        let expected = if let Some(i) = w.get("int") {
            PtValue::Int(i.num())
        } else if let Some(f) = w.get("float") {
            PtValue::Float(f.num())
        } else if let Some(s) = w.get("str") {
            PtValue::Str(s.str().to_string())
        } else if let Some(Json::Bool(b)) = w.get("bool") {
            PtValue::Bool(*b)
        } else if w.get("none").is_some() {
            PtValue::None
        } else {
            panic!("{name}: unknown scalar {w:?}")
        };
        assert_eq!(v, &expected, "{name}: scalar {sname}");
    }
    value
}

fn tensor<'a>(v: &'a PtValue, name: &str) -> &'a rae_cli::pt::PtTensor {
    v.get(name).and_then(PtValue::as_tensor).unwrap()
}

#[test]
fn state_dict_f32_matches_torch() {
    let v = check_fixture("state_dict_f32");
    let exp = expected("state_dict_f32");
    let checks = exp.get("checks").unwrap();
    // The transposed tensor was saved as a strided view of a [3,5] storage: reading its
    // storage in order would give the untransposed values, so the element-wise match
    // above proves the strides were honoured.
    let strides: Vec<usize> = checks
        .get("transposed_stride")
        .unwrap()
        .arr()
        .iter()
        .map(Json::num)
        .collect();
    assert_eq!(strides, vec![1, 5]);
    let t = tensor(&v, "transposed");
    assert_eq!(t.shape, vec![5, 3]);
    let a = t.as_f32().unwrap();
    assert_ne!(a[1], a[3], "a non-symmetric view (so strides matter)");
    // The two views of one storage overlap: shared_a[1,*] (storage 5..8) and shared_b[0,*]
    // (storage 6..8) share elements 6 and 7.
    let sa = tensor(&v, "shared_a").as_f32().unwrap();
    let sb = tensor(&v, "shared_b").as_f32().unwrap();
    assert_eq!(sa[4].to_bits(), sb[0].to_bits());
    assert_eq!(sa[5].to_bits(), sb[1].to_bits());
    assert_eq!(tensor(&v, "scalar").shape, Vec::<usize>::new());
    assert_eq!(tensor(&v, "scalar").as_f32().unwrap(), &[3.25]);
    assert_eq!(tensor(&v, "empty").numel(), 0);
    let special = tensor(&v, "special").as_f32().unwrap();
    assert!(special[0].is_nan() && special[3].to_bits() == 0x8000_0000);
}

#[test]
fn half_and_bfloat16_convert_exactly() {
    let v = check_fixture("half_bf16");
    assert_eq!(tensor(&v, "half").dtype, PtDtype::F16);
    assert_eq!(tensor(&v, "bf16").dtype, PtDtype::BF16);
    assert_eq!(
        tensor(&v, "half_special").as_f32().unwrap()[..3],
        [65504.0, 5.960_464_5e-8, f32::INFINITY]
    );
}

#[test]
fn int64_is_kept_exactly() {
    let v = check_fixture("int64");
    let labels = tensor(&v, "labels").as_i64().unwrap();
    assert!(labels.contains(&i64::MIN) && labels.contains(&i64::MAX));
    assert_eq!(tensor(&v, "count").as_i64().unwrap(), &[42]);
}

#[test]
fn nested_checkpoint_and_state_dict_selection() {
    let v = check_fixture("checkpoint_nested");
    assert_eq!(v.get("step"), Some(&PtValue::Int(7)));
    let config = v.get("config").unwrap();
    assert_eq!(
        config.get("dims"),
        Some(&PtValue::List(vec![PtValue::Int(2), PtValue::Int(3)]))
    );
    assert_eq!(config.get("extra"), Some(&PtValue::None));
    // The EMA copy is preferred (§3.8), and its names carry no prefix.
    let sd = select_state_dict(&v, &STATE_DICT_KEYS);
    assert!(std::ptr::eq(sd, v.get("ema").unwrap()));
    let names: Vec<String> = flatten_tensors(sd).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "pos_embed",
            "proj.weight",
            "proj.bias",
            "norm.weight",
            "norm.bias"
        ]
    );
    // Without ema, model is next; a raw state dict is returned as is.
    assert!(std::ptr::eq(
        select_state_dict(&v, &["nope", "model"]),
        v.get("model").unwrap()
    ));
    assert!(std::ptr::eq(select_state_dict(sd, &STATE_DICT_KEYS), sd));
    // Different models: ema and model weights differ.
    assert_ne!(
        tensor(sd, "proj.weight"),
        tensor(v.get("model").unwrap(), "proj.weight")
    );
}

#[test]
fn into_tensors_moves_what_flatten_tensors_lists() {
    let v = read_pt_file(&fixture_path("checkpoint_nested.pt")).unwrap();
    let borrowed: Vec<(String, rae_cli::pt::PtTensor)> = flatten_tensors(&v)
        .into_iter()
        .map(|(n, t)| (n, t.clone()))
        .collect();
    assert!(borrowed.iter().any(|(n, _)| n == "model.norm.bias"));
    assert_eq!(into_tensors(v), borrowed);
}

#[test]
fn sniffing_recognises_both_torch_formats_only() {
    for name in ["stat.pt", "legacy.pt", "proto4.pt"] {
        assert!(looks_like_pt(&fixture_bytes(name)), "{name}");
    }
    assert!(!looks_like_pt(b"\x10\x00\x00\x00\x00\x00\x00\x00{}"));
    assert!(!looks_like_pt(b""));
}

#[test]
fn latent_statistics_file() {
    let v = check_fixture("stat");
    let mean = tensor(&v, "mean");
    let var = tensor(&v, "var");
    assert_eq!(mean.shape, vec![8, 2, 2]);
    assert_eq!(var.shape, vec![8, 2, 2]);
    assert!(var.as_f32().unwrap().iter().all(|&x| x > 0.0));
}

#[test]
fn memo_shared_dict_reads_twice() {
    let v = check_fixture("memo_shared");
    assert_eq!(v.get("first"), v.get("second"));
}

#[test]
fn parameters_read_as_their_data() {
    check_fixture("parameters");
}

#[test]
fn pickle_protocol_4() {
    check_fixture("proto4");
}

fn refused(name: &str) -> String {
    let path = fixture_path(&format!("{name}.pt"));
    let err = read_pt_file(&path).unwrap_err();
    let Error::Format { source, reason } = &err else {
        panic!("{name}: not a format error: {err:?}");
    };
    assert_eq!(source, &path.display().to_string());
    for needle in expected(name).get("error_contains").unwrap().arr() {
        assert!(
            reason.contains(needle.str()),
            "{name}: {reason:?} lacks {:?}",
            needle.str()
        );
    }
    reason.clone()
}

#[test]
fn malicious_global_is_refused_by_name() {
    let reason = refused("malicious");
    assert!(reason.contains("refusing global os.system"), "{reason}");
    let reason = refused("malicious_stack_global");
    assert!(reason.contains("refusing global builtins.eval"), "{reason}");
    assert!(!std::path::Path::new("/tmp/rae_pt_pwned").exists());
}

#[test]
fn compressed_files_are_refused_clearly() {
    refused("deflated");
}

// ---------------------------------------------------------------------------------------
// Hand-made archives: a stored-only zip writer and a pickle assembler.

/// Pickle assembler for protocol-2 programs.
#[derive(Default)]
struct Pkl(Vec<u8>);

impl Pkl {
    fn new() -> Self {
        Pkl(vec![0x80, 2])
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend(bytes);
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    fn int(mut self, i: i32) -> Self {
        self.0.push(b'J');
        self.0.extend(i.to_le_bytes());
        self
    }
    fn ints(mut self, v: &[i32]) -> Self {
        self.0.push(b'(');
        for &i in v {
            self = self.int(i);
        }
        self.0.push(b't');
        self
    }
    /// Pushes `_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`.
    fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i32,
        offset: i32,
        shape: &[i32],
        stride: &[i32],
    ) -> Self {
        self.op(b"ctorch._utils\n_rebuild_tensor_v2\n(")
            .op(b"(")
            .str("storage")
            .op(format!("ctorch\n{class}\n").as_bytes())
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89ccollections\nOrderedDict\n)RtR")
    }
}

fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8])], byteorder: &str, zip64: bool) -> Vec<u8> {
    let mut entries: Vec<(String, &[u8])> = vec![("m/data.pkl".into(), pkl)];
    entries.push(("m/byteorder".into(), byteorder.as_bytes()));
    for (k, d) in storages {
        entries.push((format!("m/data/{k}"), d));
    }
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    make_zip(&refs, zip64)
}

fn f32_bytes(v: &[f32], big_endian: bool) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect()
}

/// `{"w": transpose of a [2,3] storage}` with the given byte order and zip flavour.
fn transposed_file(big_endian: bool, zip64: bool) -> Vec<u8> {
    let pkl = Pkl::new()
        .op(b"}(")
        .str("w")
        .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
        .op(b"u.")
        .0;
    let data = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], big_endian);
    let order = if big_endian { "big" } else { "little" };
    torch_zip(&pkl, &[("0", &data)], order, zip64)
}

#[test]
fn crafted_archive_reads_with_either_byte_order_and_zip64() {
    for big_endian in [false, true] {
        for zip64 in [false, true] {
            let v = read_pt(&transposed_file(big_endian, zip64), "crafted").unwrap();
            let w = tensor(&v, "w");
            assert_eq!(w.shape, vec![3, 2]);
            // Transpose of [[0,1,2],[3,4,5]].
            assert_eq!(
                w.as_f32().unwrap(),
                &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0],
                "big_endian {big_endian}, zip64 {zip64}"
            );
        }
    }
}

#[test]
fn other_storage_types_widen() {
    let pkl = Pkl::new()
        .op(b"}(")
        .str("i32")
        .tensor("IntStorage", "0", 2, 0, &[2], &[1])
        .str("u8")
        .tensor("ByteStorage", "1", 2, 0, &[2], &[1])
        .str("b")
        .tensor("BoolStorage", "2", 2, 0, &[2], &[1])
        .str("f64")
        .tensor("DoubleStorage", "3", 1, 0, &[], &[])
        .op(b"u.")
        .0;
    let i32s: Vec<u8> = [-7i32, 1 << 30]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let f64s = 0.1f64.to_le_bytes();
    let file = torch_zip(
        &pkl,
        &[("0", &i32s), ("1", &[200, 3]), ("2", &[0, 1]), ("3", &f64s)],
        "little",
        false,
    );
    let v = read_pt(&file, "crafted").unwrap();
    assert_eq!(tensor(&v, "i32").as_i64().unwrap(), &[-7, 1 << 30]);
    assert_eq!(tensor(&v, "u8").as_i64().unwrap(), &[200, 3]);
    assert_eq!(tensor(&v, "b").as_i64().unwrap(), &[0, 1]);
    assert_eq!(tensor(&v, "f64").as_f32().unwrap(), &[0.1f32]);
    assert_eq!(tensor(&v, "f64").dtype, PtDtype::F64);
}

fn crafted_error(pkl: &[u8], storages: &[(&str, &[u8])]) -> String {
    let file = torch_zip(pkl, storages, "little", false);
    match read_pt(&file, "crafted.pt") {
        Err(Error::Format { source, reason }) => {
            assert_eq!(source, "crafted.pt");
            reason
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn views_past_their_storage_are_refused() {
    let data = f32_bytes(&[0.0; 6], false);
    let cases: &[(i32, &[i32], &[i32])] = &[
        (1, &[6], &[1]),       // offset pushes the end out
        (0, &[3, 2], &[2, 1]), // 3 rows of stride 2: last index 5 is fine...
        (0, &[2, 4], &[3, 1]), // ...but this reaches index 6
        (6, &[], &[]),         // a 0-d tensor at the end
    ];
    for (i, (offset, shape, stride)) in cases.iter().enumerate() {
        let pkl = Pkl::new()
            .op(b"}(")
            .str("w")
            .tensor("FloatStorage", "0", 6, *offset, shape, stride)
            .op(b"u.")
            .0;
        let file = torch_zip(&pkl, &[("0", &data)], "little", false);
        let result = read_pt(&file, "crafted");
        if i == 1 {
            assert!(result.is_ok());
        } else {
            let reason = result.unwrap_err().to_string();
            assert!(
                reason.contains("tensor `w`") && reason.contains("reaches past"),
                "{reason}"
            );
        }
    }
}

#[test]
fn storage_problems_name_the_tensor_and_entry() {
    let pkl = Pkl::new()
        .op(b"}(")
        .str("layer.w")
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(b"u.")
        .0;
    let reason = crafted_error(&pkl, &[("0", &[0u8; 20])]);
    assert!(
        reason.contains("tensor `layer.w`") && reason.contains("holds only 20 bytes"),
        "{reason}"
    );
    let reason = crafted_error(&pkl, &[]);
    assert!(reason.contains("m/data/0 is missing"), "{reason}");
    // A negative size is refused when the tensor is built.
    let pkl = Pkl::new()
        .op(b"}(")
        .str("w")
        .tensor("FloatStorage", "0", 6, 0, &[-1], &[1])
        .op(b"u.")
        .0;
    let reason = crafted_error(&pkl, &[("0", &[0u8; 24])]);
    assert!(reason.contains("negative"), "{reason}");
}

#[test]
fn crc_mismatch_is_detected() {
    let mut file = transposed_file(false, false);
    // The storage's 24 bytes sit just before the central directory; flip one of them.
    let cd = file
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 1, 2])
        .unwrap();
    file[cd - 3] ^= 0x40;
    let reason = read_pt(&file, "crafted").unwrap_err().to_string();
    assert!(
        reason.contains("m/data/0") && reason.contains("CRC-32"),
        "{reason}"
    );
}

#[test]
fn deep_nesting_and_cycles_are_refused() {
    // 100 000 nested lists: the machine is iterative, conversion stops at MAX_DEPTH.
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b'(', 100_000));
    deep.extend(std::iter::repeat_n(b'l', 100_000));
    deep.push(b'.');
    let reason = crafted_error(&deep, &[]);
    assert!(reason.contains("nested deeper than"), "{reason}");
    // A list that contains itself.
    let reason = crafted_error(b"\x80\x02]q\x00h\x00a.", &[]);
    assert!(reason.contains("nested deeper than"), "{reason}");
}

#[test]
fn shared_references_cannot_expand_without_bound() {
    // l0 = [0]*64; l(k+1) = [lk]*64 four times: 64^5 ≈ 10^9 leaves from ~1 KB.
    let mut p = vec![0x80, 2, b'('];
    p.extend(std::iter::repeat_n([b'K', 0], 64).flatten());
    p.extend([b'l', b'q', 0]);
    for level in 1..5u8 {
        p.push(b'(');
        p.extend(std::iter::repeat_n([b'h', level - 1], 64).flatten());
        p.extend([b'l', b'q', level]);
    }
    p.push(b'.');
    let reason = crafted_error(&p, &[]);
    assert!(reason.contains("past its limit"), "{reason}");
}

#[test]
fn dict_keys_ints_become_strings_last_value_wins_and_others_are_refused() {
    let pkl = Pkl::new()
        .op(b"}(")
        .int(3)
        .int(1)
        .str("a")
        .int(1)
        .str("a")
        .int(2)
        .op(b"u.")
        .0;
    let file = torch_zip(&pkl, &[], "little", false);
    let v = read_pt(&file, "crafted").unwrap();
    assert_eq!(
        v,
        PtValue::Dict(vec![
            ("3".into(), PtValue::Int(1)),
            ("a".into(), PtValue::Int(2))
        ])
    );
    let reason = crafted_error(b"\x80\x02}(NK\x01u.", &[]);
    assert!(reason.contains("dict key"), "{reason}");
}

#[test]
fn archives_without_a_single_pickle_are_refused() {
    let none = make_zip(&[("m/other", b"x")], false);
    let reason = read_pt(&none, "x").unwrap_err().to_string();
    assert!(reason.contains("no <folder>/data.pkl"), "{reason}");
    let two = make_zip(
        &[("a/data.pkl", b"\x80\x02N."), ("b/data.pkl", b"\x80\x02N.")],
        false,
    );
    let reason = read_pt(&two, "x").unwrap_err().to_string();
    assert!(reason.contains("two pickles"), "{reason}");
    let bad_order = torch_zip(b"\x80\x02N.", &[], "middle", false);
    let reason = read_pt(&bad_order, "x").unwrap_err().to_string();
    assert!(reason.contains("byteorder"), "{reason}");
}

// ---------------------------------------------------------------------------------------
// Issue 10: byte budget, linear time, reading without widening.

/// A pickle that names one memoised string of `size` bytes `refs` times in a list.
fn memo_bomb(size: usize, refs: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'(', b'X'];
    p.extend((size as u32).to_le_bytes());
    p.extend(std::iter::repeat_n(b'a', size));
    p.extend([b'q', 0]);
    p.extend(std::iter::repeat_n([b'h', 0], refs - 1).flatten());
    p.extend([b'l', b'.']);
    torch_zip(&p, &[], "little", false)
}

#[test]
fn memo_references_to_one_big_string_are_counted_in_bytes() {
    // One 1 MiB string named 300 times: 300 MiB from a 1 MiB file (5 000 times took the
    // reader past 4 GB before strings were counted in bytes).
    let file = memo_bomb(1 << 20, 300);
    let limit = rae_cli::pt::byte_budget(file.len());
    assert!(limit < 300 << 20);
    let check = |e: Error| {
        let Error::Format { source, reason } = &e else {
            panic!("not a format error: {e:?}");
        };
        assert_eq!(source, "bomb.pt");
        assert!(
            reason.contains("a string of 1048576 bytes")
                && reason.contains(&format!("limit of {limit} bytes"))
                && reason.contains(&format!("its {} bytes", file.len())),
            "{reason}"
        );
    };
    check(read_pt(&file, "bomb.pt").unwrap_err());
    check(read_pt_layout(&file, "bomb.pt").unwrap_err());
    check(read_pt_raw(&file, "bomb.pt").unwrap_err());
    // Twenty references fit.
    let v = read_pt(&memo_bomb(1 << 20, 20), "ok.pt").unwrap();
    let PtValue::List(items) = v else {
        panic!("not a list")
    };
    assert_eq!(items.len(), 20);
}

/// `{"layer.<i>.w": view i of one shared float storage}` for `n` tensors, memoising the
/// rebuild function, the storage and OrderedDict as torch does.
fn many_tensors(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x02}q\x00(".to_vec();
    for i in 0..n {
        let key = format!("layer.{i}.w");
        p.push(0x8c);
        p.push(key.len() as u8);
        p.extend(key.as_bytes());
        if i == 0 {
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x01((X\x07\x00\x00\x00storage");
            p.extend(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ");
            p.extend((n as i32).to_le_bytes());
            p.extend(b"tQq\x02");
        } else {
            p.extend(b"h\x01(h\x02");
        }
        p.push(b'J');
        p.extend((i as i32).to_le_bytes());
        p.extend(b"K\x01\x85K\x01\x85\x89");
        p.extend(if i == 0 {
            b"ccollections\nOrderedDict\nq\x03".as_slice()
        } else {
            b"h\x03".as_slice()
        });
        p.extend(b")RtR");
    }
    p.extend(b"u.");
    let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    torch_zip(&p, &[("0", &data)], "little", false)
}

#[test]
fn two_hundred_thousand_tensors_read_in_linear_time() {
    // Loading was quadratic (a 1 MB file of 100k tensors took 30 s in the release build);
    // the bound guards against that coming back, far above what a linear reader takes.
    let file = many_tensors(200_000);
    let start = std::time::Instant::now();
    let listed = into_tensors(read_pt_layout(&file, "many.pt").unwrap());
    assert_eq!(listed.len(), 200_000);
    assert_eq!(listed[123_456].0, "layer.123456.w");
    assert_eq!(listed[5].1.shape, [1]);
    let read = into_tensors(read_pt(&file, "many.pt").unwrap());
    assert_eq!(read[199_999].1.as_f32().unwrap(), [199_999.0]);
    let elapsed = start.elapsed();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "pt: 200000 tensors listed and read in {elapsed:?}"
    );
    assert!(elapsed.as_secs() < 20, "200k tensors took {elapsed:?}");
}

#[test]
fn layout_and_raw_reads_keep_each_dtype_without_widening() {
    // u8 (4 elements, transposed 2x2 view), bool with a non-0/1 byte, int32 and float16 in a
    // big-endian archive.
    let pkl = Pkl::new()
        .op(b"}(")
        .str("u8")
        .tensor("ByteStorage", "0", 4, 0, &[2, 2], &[1, 2])
        .str("b")
        .tensor("BoolStorage", "1", 2, 0, &[2], &[1])
        .str("i32")
        .tensor("IntStorage", "2", 2, 0, &[2], &[1])
        .str("h")
        .tensor("HalfStorage", "3", 1, 0, &[], &[])
        .op(b"u.")
        .0;
    let i32s: Vec<u8> = [-2i32, 1 << 20]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let file = torch_zip(
        &pkl,
        &[
            ("0", &[1, 2, 3, 4]),
            ("1", &[0, 2]),
            ("2", &i32s),
            ("3", &[0xC0, 0x00]),
        ],
        "big",
        false,
    );
    let raw = into_tensors(read_pt_raw(&file, "raw.pt").unwrap());
    let by_name = |n: &str| raw.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let u8t = by_name("u8");
    assert_eq!(
        (u8t.dtype, u8t.shape.as_slice()),
        (PtDtype::U8, [2, 2].as_slice())
    );
    assert_eq!(u8t.data, [1, 3, 2, 4], "one byte per element, row-major");
    assert_eq!(by_name("b").data, [0, 1]);
    let le: Vec<u8> = [-2i32, 1 << 20]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(by_name("i32").data, le);
    let h = by_name("h");
    assert_eq!(h.data, [0x00, 0xC0]);
    assert_eq!(h.to_f32().unwrap(), [-2.0]);
    assert!(by_name("i32").to_f32().is_err());
    // The layout lists the same dtypes and shapes as the full read, with no data.
    let layout = into_tensors(read_pt_layout(&file, "raw.pt").unwrap());
    let full = into_tensors(read_pt(&file, "raw.pt").unwrap());
    assert_eq!(layout.len(), full.len());
    for ((ln, l), (fname, f)) in layout.iter().zip(&full) {
        assert_eq!((ln, l.dtype, &l.shape), (fname, f.dtype, &f.shape));
    }
    assert_eq!(full[0].1.as_i64().unwrap(), [1, 3, 2, 4]);
}

// ---------------------------------------------------------------------------------------
// Robustness: nothing panics, whatever the bytes.

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

/// The `data.pkl` and storages of a fixture, to re-zip after mutating the pickle.
fn fixture_parts(name: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    // Rebuild from the expected layout: read the zip with the reader's own public
    // behaviour is not possible, so locate entries by their local headers.
    let bytes = fixture_bytes(&format!("{name}.pt"));
    let mut entries = Vec::new();
    // Central directory entries give name, size and local offset.
    let mut at = bytes
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 1, 2])
        .unwrap();
    while bytes[at..].starts_with(&[0x50, 0x4b, 1, 2]) {
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
        let u32_at = |o: usize| {
            u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        };
        let size = u32_at(at + 24);
        let (nl, el, cl) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32));
        let local = u32_at(at + 42);
        let name = String::from_utf8(bytes[at + 46..at + 46 + nl].to_vec()).unwrap();
        let start = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        entries.push((name, bytes[start..start + size].to_vec()));
        at += 46 + nl + el + cl;
    }
    let pkl_at = entries
        .iter()
        .position(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap();
    let (_, pkl) = entries.remove(pkl_at);
    (pkl, entries)
}

fn rezip(pkl: &[u8], rest: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut entries: Vec<(&str, &[u8])> = vec![("f/data.pkl", pkl)];
    let renamed: Vec<(String, &[u8])> = rest
        .iter()
        .map(|(n, d)| {
            let tail = n.split_once('/').map_or(n.as_str(), |(_, t)| t);
            (format!("f/{tail}"), d.as_slice())
        })
        .collect();
    entries.extend(renamed.iter().map(|(n, d)| (n.as_str(), *d)));
    make_zip(&entries, false)
}

#[test]
fn rezipped_fixture_still_reads() {
    // The helper used by the property tests must produce readable archives.
    for name in VALID {
        let (pkl, rest) = fixture_parts(name);
        let original = read_pt(&fixture_bytes(&format!("{name}.pt")), name).unwrap();
        let again = read_pt(&rezip(&pkl, &rest), name).unwrap();
        // Debug text, because NaN != NaN.
        assert_eq!(format!("{again:?}"), format!("{original:?}"), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn truncation_never_panics(which in 0..VALID.len(), cut in 0.0f64..1.0) {
        let bytes = fixture_bytes(&format!("{}.pt", VALID[which]));
        let len = (bytes.len() as f64 * cut) as usize;
        // The end-of-directory record is gone, so this is always an error.
        prop_assert!(read_pt(&bytes[..len], "cut").is_err());
    }

    #[test]
    fn corrupting_bytes_never_panics(
        which in 0..VALID.len(),
        edits in prop::collection::vec((0.0f64..1.0, any::<u8>()), 1..8),
    ) {
        let mut bytes = fixture_bytes(&format!("{}.pt", VALID[which]));
        for (at, value) in edits {
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[i] = value;
        }
        let _ = read_pt(&bytes, "corrupt");
    }

    #[test]
    fn corrupting_the_pickle_behind_a_valid_crc_never_panics(
        which in 0..VALID.len(),
        edits in prop::collection::vec((0.0f64..1.0, any::<u8>()), 1..6),
        cut in 0.5f64..1.0,
    ) {
        let (mut pkl, rest) = fixture_parts(VALID[which]);
        for (at, value) in edits {
            let i = ((pkl.len() as f64 * at) as usize).min(pkl.len() - 1);
            pkl[i] = value;
        }
        pkl.truncate(((pkl.len() as f64) * cut) as usize + 1);
        let _ = read_pt(&rezip(&pkl, &rest), "corrupt");
    }

    #[test]
    fn random_pickles_never_panic(pkl in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_pt(&make_zip(&[("r/data.pkl", &pkl)], false), "random");
    }

    #[test]
    fn random_opcode_soup_never_panics(
        ops in prop::collection::vec(prop::sample::select(
            b"()]}tlduseaqhj0128NKJMG\x85\x86\x87\x88\x89\x8a\x8c\x93\x94RQb.X".to_vec()), 0..200),
    ) {
        // Mostly-valid opcodes (arguments come from the following bytes) reach deeper
        // into the machine than uniform random bytes.
        let mut pkl = vec![0x80, 2];
        pkl.extend(ops);
        pkl.push(b'.');
        let _ = read_pt(&make_zip(&[("r/data.pkl", &pkl)], false), "soup");
    }
}
