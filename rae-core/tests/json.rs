//! The JSON reader and writer: RFC 8259 details, round trips, limits and accessors.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rae_core::json::{self, JsonValue, MAX_DEPTH};
use rae_core::Error;

fn fixture(rel: &str) -> String {
    let path = format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn num(text: &str) -> f64 {
    match json::parse(text) {
        Ok(JsonValue::Number(x)) => x,
        other => panic!("{text:?} parsed as {other:?}"),
    }
}

fn err_reason(text: &str) -> String {
    match json::parse(text) {
        Err(Error::Format { source, reason }) => {
            assert_eq!(source, "JSON");
            reason
        }
        other => panic!("{text:?} should be rejected, got {other:?}"),
    }
}

/// Structural equality that also tells -0.0 from 0.0 (derived `PartialEq` does not).
fn same(a: &JsonValue, b: &JsonValue) -> bool {
    match (a, b) {
        (JsonValue::Number(x), JsonValue::Number(y)) => x.to_bits() == y.to_bits(),
        (JsonValue::Array(x), JsonValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (JsonValue::Object(x), JsonValue::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2))
        }
        _ => a == b,
    }
}

#[test]
fn dit_config_fixture() {
    let v = json::parse(&fixture("dit_config.json")).unwrap();
    let hidden: Vec<usize> = v
        .get("hidden_size")
        .and_then(JsonValue::as_array)
        .unwrap()
        .iter()
        .map(|x| x.as_usize().unwrap())
        .collect();
    assert_eq!(hidden, [32, 64]);
    assert_eq!(v.get("mlp_ratio").and_then(JsonValue::as_f64), Some(4.0));
    assert_eq!(v.get("class_dropout_prob").unwrap().as_f64(), Some(0.1));
    assert_eq!(v.get("class_dropout_prob").unwrap().as_i64(), None);
    assert_eq!(v.get("use_swiglu").and_then(JsonValue::as_bool), Some(true));
    assert_eq!(
        v.get("use_qknorm").and_then(JsonValue::as_bool),
        Some(false)
    );
    assert_eq!(v.get("num_classes").and_then(JsonValue::as_usize), Some(5));
    assert!(v.get("no_such_key").is_none());
    // Member order is file order.
    let keys: Vec<&str> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys.first(), Some(&"input_size"));
    assert_eq!(keys.last(), Some(&"use_pos_embed"));
    assert_eq!(keys.len(), 15);
}

#[test]
fn dinov2_config_fixture() {
    let v = json::parse(&fixture("dinov2/config.json")).unwrap();
    assert_eq!(v.get("layer_norm_eps").unwrap().as_f64(), Some(1e-6));
    assert_eq!(v.get("hidden_size").unwrap().as_usize(), Some(32));
    assert_eq!(v.get("hidden_act").unwrap().as_str(), Some("gelu"));
    let arch = v.get("architectures").unwrap().as_array().unwrap();
    assert_eq!(arch[0].as_str(), Some("Dinov2WithRegistersModel"));
    // A pretty rewrite parses back to the same value.
    let again = json::parse(&v.to_json_pretty().unwrap()).unwrap();
    assert!(same(&v, &again));
}

#[test]
fn numbers() {
    assert_eq!(num("1e-12"), 1e-12);
    assert_eq!(num("1.5E+3"), 1500.0);
    assert_eq!(num("1.5e3"), 1500.0);
    assert_eq!(num("2E-2"), 0.02);
    assert_eq!(num("0.1"), 0.1);
    assert_eq!(num("-17"), -17.0);
    assert_eq!(num("0"), 0.0);
    let neg0 = num("-0.0");
    assert_eq!(neg0, 0.0);
    assert!(neg0.is_sign_negative());
    assert!(num("-0").is_sign_negative());
    assert_eq!(num("1e-400"), 0.0); // underflow rounds to zero
    assert_eq!(num("123456789012345678"), 123456789012345678.0);
    assert_eq!(num("1.7976931348623157e308"), f64::MAX);
    assert_eq!(num(" \t\r\n 42 \n"), 42.0);
    for bad in [
        "01",
        "-01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "1e+",
        "1.e5",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e999",
        "1_000",
    ] {
        err_reason(bad);
    }
}

#[test]
fn number_writing_round_trips() {
    for x in [
        0.0,
        -0.0,
        1e-12,
        1.5e3,
        0.1,
        1.0 / 3.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        -2.5e-7,
        1e16,
        123456789.125,
        9007199254740993.0,
    ] {
        let s = JsonValue::Number(x).to_json_string().unwrap();
        let back = num(&s);
        assert_eq!(back.to_bits(), x.to_bits(), "{x:e} written as {s}");
    }
    assert_eq!(JsonValue::Number(4.0).to_json_string().unwrap(), "4");
    assert_eq!(JsonValue::Number(-0.0).to_json_string().unwrap(), "-0");
    assert_eq!(JsonValue::Number(0.25).to_json_string().unwrap(), "0.25");
}

#[test]
fn non_finite_numbers_are_rejected_by_the_writer() {
    let v = JsonValue::object([(
        "lr",
        JsonValue::array([JsonValue::from(1.0), f64::NAN.into()]),
    )]);
    let e = v.to_json_string().unwrap_err().to_string();
    assert!(e.contains("$.lr[1]"), "{e}");
    assert!(v.to_json_pretty().is_err());
    // Display cannot fail: it writes null.
    assert_eq!(v.to_string(), r#"{"lr":[1,null]}"#);
    assert!(JsonValue::Number(f64::INFINITY).to_json_string().is_err());
}

#[test]
fn string_escapes() {
    let v = json::parse(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00 z""#).unwrap();
    assert_eq!(
        v.as_str(),
        Some("a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}\u{20ac}\u{1f600} z")
    );
    // Raw UTF-8 passes through.
    assert_eq!(
        json::parse("\"h\u{e9}llo \u{1f600}\"").unwrap().as_str(),
        Some("h\u{e9}llo \u{1f600}")
    );
    assert_eq!(json::parse(r#""\u0000""#).unwrap().as_str(), Some("\0"));

    for bad in [
        r#""\ud83d""#,        // lone high surrogate
        r#""\ud83dx""#,       // high surrogate followed by text
        r#""\ud83d\u0041""#,  // high surrogate followed by a non-surrogate
        r#""\ude00""#,        // lone low surrogate
        r#""\x41""#,          // not a JSON escape
        r#""\u12""#,          // short \u
        r#""\u12g4""#,        // not hex
        "\"tab\there\"",      // raw control character
        "\"line\nbreak\"",    // raw newline
        "\"unterminated",     // no closing quote
        "\"ends in escape\\", // backslash at the end
    ] {
        err_reason(bad);
    }

    // Writing escapes what must be escaped and nothing else.
    let s = "q\"b\\s/\n\u{1}\u{1f}\u{7f}\u{e9}";
    let w = JsonValue::from(s).to_json_string().unwrap();
    assert_eq!(w, "\"q\\\"b\\\\s/\\n\\u0001\\u001f\u{7f}\u{e9}\"");
    assert_eq!(json::parse(&w).unwrap().as_str(), Some(s));
}

#[test]
fn structure_errors_give_byte_offsets() {
    let r = err_reason("[1, x]");
    assert!(r.contains("byte 4"), "{r}");
    let r = err_reason("{\"a\": 1,}");
    assert!(r.contains("byte 8"), "{r}");
    for bad in [
        "",
        "   ",
        "[1, 2",
        "[1 2]",
        "[1,]",
        "{\"a\" 1}",
        "{a: 1}",
        "{\"a\": 1 \"b\": 2}",
        "tru",
        "nul",
        "True",
        "1 2",
        "{} x",
        "[] []",
        "// c\n1",
        "\u{feff}1",
    ] {
        err_reason(bad);
    }
}

#[test]
fn depth_limit() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(json::parse(&ok).is_ok());
    let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(err_reason(&too_deep).contains("nested"));
    let objs = format!(
        "{}1{}",
        "{\"a\":".repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    err_reason(&objs);
    // Hostile input: far deeper than any stack would survive by plain recursion.
    err_reason(&"[".repeat(1_000_000));
    err_reason(&"{\"k\":[".repeat(200_000));
}

#[test]
fn accessors() {
    let v = json::parse(
        r#"{"i": 3.0, "f": 3.5, "n": -2, "big": 9007199254740992, "safe": 9007199254740991,
            "s": "x", "b": false, "z": null, "a": [1], "o": {"k": 1}, "k": 1, "k": 2}"#,
    )
    .unwrap();
    let g = |k: &str| v.get(k).unwrap();
    assert_eq!(g("i").as_i64(), Some(3));
    assert_eq!(g("i").as_usize(), Some(3));
    assert_eq!(g("f").as_i64(), None);
    assert_eq!(g("f").as_f64(), Some(3.5));
    assert_eq!(g("n").as_i64(), Some(-2));
    assert_eq!(g("n").as_usize(), None);
    assert_eq!(g("big").as_i64(), None, "2^53 may be a rounded 2^53 + 1");
    assert_eq!(g("safe").as_i64(), Some(9007199254740991));
    assert_eq!(g("s").as_str(), Some("x"));
    assert_eq!(g("s").as_f64(), None);
    assert_eq!(g("b").as_bool(), Some(false));
    assert!(g("z").is_null());
    assert_eq!(g("a").as_array().map(<[_]>::len), Some(1));
    assert_eq!(g("o").get("k").and_then(JsonValue::as_i64), Some(1));
    assert!(g("o").as_object().is_some());
    assert!(g("a").get("k").is_none());
    // A repeated key keeps both members; get gives the last, like Python's json.
    assert_eq!(g("k").as_i64(), Some(2));
    assert_eq!(
        v.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == "k")
            .count(),
        2
    );
}

#[test]
fn builders_and_pretty_output() {
    let v = JsonValue::object([
        ("hidden_size", JsonValue::array([32, 64])),
        ("eps", 1e-6.into()),
        ("name", "dit".into()),
        ("flag", true.into()),
        ("none", None::<f64>.into()),
        ("empty", JsonValue::array(Vec::<JsonValue>::new())),
        ("obj", JsonValue::object(Vec::<(String, JsonValue)>::new())),
    ]);
    assert_eq!(
        v.to_json_string().unwrap(),
        r#"{"hidden_size":[32,64],"eps":1e-6,"name":"dit","flag":true,"none":null,"empty":[],"obj":{}}"#
    );
    let pretty = v.to_json_pretty().unwrap();
    assert!(pretty.starts_with("{\n  \"hidden_size\": [\n    32,\n    64\n  ],\n"));
    assert!(pretty.ends_with("\"obj\": {}\n}\n"));
    assert!(same(&json::parse(&pretty).unwrap(), &v));
}

#[test]
fn parse_named_puts_the_file_in_errors() {
    match json::parse_named("{\"a\":}", "config.json") {
        Err(Error::Format { source, reason }) => {
            assert_eq!(source, "config.json");
            assert!(reason.contains("byte 5"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

fn arb_json() -> impl Strategy<Value = JsonValue> {
    let leaf = prop_oneof![
        Just(JsonValue::Null),
        any::<bool>().prop_map(JsonValue::Bool),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(JsonValue::Number),
        (-1000i64..1000).prop_map(|i| JsonValue::Number(i as f64)),
        Just(JsonValue::Number(-0.0)),
        any::<String>().prop_map(JsonValue::String),
        "[\"\\\\\\u{0}-\\u{1f}a\\u{e9}\\u{1f600}]{0,8}".prop_map(JsonValue::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(JsonValue::Array),
            prop::collection::vec((any::<String>(), inner), 0..6).prop_map(JsonValue::Object),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(v in arb_json()) {
        let compact = v.to_json_string().unwrap();
        let back = json::parse(&compact).unwrap();
        prop_assert!(same(&back, &v), "{compact}");
        prop_assert_eq!(v.to_string(), compact);
        let pretty = v.to_json_pretty().unwrap();
        prop_assert!(same(&json::parse(&pretty).unwrap(), &v), "{}", pretty);
    }

    #[test]
    fn f64_round_trip_is_bit_exact(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assume!(x.is_finite());
        let s = JsonValue::Number(x).to_json_string().unwrap();
        prop_assert_eq!(num(&s).to_bits(), bits, "{}", s);
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = json::parse(&s);
    }

    #[test]
    fn truncated_documents_are_rejected(v in arb_json(), cut in any::<prop::sample::Index>()) {
        // Only arrays, objects and strings are certainly invalid when cut short.
        prop_assume!(matches!(v, JsonValue::Array(_) | JsonValue::Object(_) | JsonValue::String(_)));
        let s = v.to_json_string().unwrap();
        let mut at = cut.index(s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        prop_assert!(json::parse(&s[..at]).is_err(), "{:?}", &s[..at]);
    }
}
