//! The `.npz`/`.npy` reader on files numpy wrote (`tools/make_eval_fixtures.py`,
//! `tests/fixtures/npz/`) and on hostile ones: every failure is a named error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::path::PathBuf;

use rae_cli::store::{parse_npy, NpyDtype, Npz};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/npz")
        .join(name)
}

/// The values `make_eval_fixtures.py` stored, reconstructed from the plain file.
fn check_common(npz: &Npz) {
    let a = npz.require("a").unwrap();
    assert_eq!((a.dtype, a.shape.clone()), (NpyDtype::F32, vec![3, 4, 5]));
    let b = npz.require("b").unwrap();
    assert_eq!((b.dtype, b.shape.clone()), (NpyDtype::F64, vec![6, 7]));
    let d = npz.require("d").unwrap();
    assert_eq!(d.to_f64(), (-5..7).map(f64::from).collect::<Vec<_>>());
    let e = npz.require("e").unwrap();
    assert_eq!(e.dtype, NpyDtype::I32);
    assert_eq!(
        e.to_f64(),
        (0..10).map(|i| f64::from(i * -3)).collect::<Vec<_>>()
    );
    let c = npz.require("c").unwrap();
    assert_eq!(c.shape, vec![2, 8, 8, 3]);
    assert_eq!(c.to_u8("c").unwrap().len(), 2 * 8 * 8 * 3);
    let s = npz.require("s").unwrap();
    assert!(s.shape.is_empty());
    assert_eq!(s.to_f64(), vec![2.5]);
}

#[test]
fn stored_compressed_fortran_agree() {
    let plain = Npz::open(&fixture("plain.npz")).unwrap();
    check_common(&plain);
    let comp = Npz::open(&fixture("compressed.npz")).unwrap();
    check_common(&comp);
    for name in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            plain.require(name).unwrap().to_f64(),
            comp.require(name).unwrap().to_f64(),
            "{name}"
        );
    }
    let fort = Npz::open(&fixture("fortran.npz")).unwrap();
    assert!(fort.require("a").unwrap().fortran);
    for name in ["a", "b"] {
        assert_eq!(
            plain.require(name).unwrap().to_f64(),
            fort.require(name).unwrap().to_f64(),
            "{name}"
        );
    }
    let pos = Npz::open(&fixture("positional.npz")).unwrap();
    assert_eq!(pos.names().unwrap(), vec!["arr_0", "arr_1"]);
    assert_eq!(
        pos.require("arr_0").unwrap().to_u8("arr_0").unwrap(),
        plain.require("c").unwrap().to_u8("c").unwrap()
    );
    let big = Npz::open(&fixture("bigendian.npz")).unwrap();
    assert_eq!(
        big.require("a").unwrap().to_f32(),
        (0..24).map(|i| i as f32).collect::<Vec<_>>()
    );
}

#[test]
fn npy_versions_2_and_3() {
    let plain = Npz::open(&fixture("plain.npz")).unwrap();
    let want = plain.require("a").unwrap().to_f32();
    for v in ["v2.npy", "v3.npy"] {
        let bytes = std::fs::read(fixture(v)).unwrap();
        let a = parse_npy(Cow::Owned(bytes), v).unwrap();
        assert_eq!(a.to_f32(), want, "{v}");
    }
}

#[test]
fn adm_reference_batch_layout() {
    let npz = Npz::open(&fixture("adm_ref.npz")).unwrap();
    assert_eq!(npz.require("arr_0").unwrap().shape, vec![2, 8, 8, 3]);
    assert_eq!(npz.require("sigma").unwrap().shape, vec![8, 8]);
    assert_eq!(npz.require("mu_s").unwrap().shape, vec![5]);
    let err = npz.require("nope").unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("arr_0"), "{err}");
}

#[test]
fn unsupported_dtype_is_named() {
    let npz = Npz::open(&fixture("unsupported.npz")).unwrap();
    let err = npz.require("a").unwrap_err().to_string();
    assert!(
        err.contains("unsupported dtype") && err.contains("c8"),
        "{err}"
    );
}

fn npy(header: &str, body: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(body);
    out
}

#[test]
fn hostile_npy_headers_are_errors() {
    let ok = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[0; 8],
    );
    assert_eq!(
        parse_npy(Cow::Owned(ok), "x").unwrap().to_f32(),
        vec![0.0, 0.0]
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"NOTNUMPY\x01\x00\x00\x00".to_vec(), "magic"),
        (b"\x93NUMPY\x09\x00\x10\x00".to_vec(), "version"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &[0; 8]), "truncated"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", &[]), "overflows"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", &[0; 4]), "needs"),
        (npy("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", &[0; 12]), "unsupported dtype"),
        (npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", &[0; 4]), "structured"),
        (npy("{'descr': '<f4', 'shape': (1,), }", &[0; 4]), "fortran_order"),
        (npy("['not', 'a', 'dict']", &[]), "dict"),
        (npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", &[0; 4]), "True"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", &[0; 4]), "dimension"),
    ];
    for (bytes, want) in cases {
        let err = parse_npy(Cow::Owned(bytes), "bad.npy")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.npy") && err.contains(want),
            "{want}: {err}"
        );
    }
    // Every truncation of a valid file is an error, never a panic.
    let ok = npy(
        "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }",
        &[1; 32],
    );
    for len in 0..ok.len() {
        assert!(parse_npy(Cow::Borrowed(&ok[..len]), "t").is_err(), "{len}");
    }
}

#[test]
fn hostile_npz_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("rae-npz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture("compressed.npz")).unwrap();
    // Truncations, and single flipped bytes, of a compressed archive.
    for (k, cut) in [0, 10, bytes.len() / 2, bytes.len() - 1]
        .into_iter()
        .enumerate()
    {
        let p = dir.join(format!("cut{k}.npz"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(Npz::open(&p).is_err(), "cut at {cut}");
    }
    for at in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        let p = dir.join("flip.npz");
        std::fs::write(&p, &b).unwrap();
        if let Ok(npz) = Npz::open(&p) {
            for name in ["a", "b", "c", "d", "e", "s"] {
                if let Ok(Some(a)) = npz.get(name) {
                    let _ = a.to_f64();
                }
            }
        }
    }
    let p = dir.join("text.npz");
    std::fs::write(&p, b"hello, not a zip").unwrap();
    let err = Npz::open(&p).unwrap_err().to_string();
    assert!(err.contains("not a zip"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
