//! The legacy (torch < 1.6, `_use_new_zipfile_serialization=False`) format: torch's own
//! files against their expected values and their zip twins, hand-built files for what torch
//! no longer writes (storage views, Python 2 strings, big-endian machines, the tar format),
//! and hostile files, which must give named errors and never panic.

use super::*;

/// The legacy fixtures torch wrote, and whether each has a `_zip` twin of the same value.
const LEGACY: [(&str, bool); 5] = [
    ("legacy", false),
    ("legacy_mixed", true),
    ("legacy_proto4", false),
    ("legacy_fid_like", true),
    ("legacy_checkpoint", true),
];

fn legacy_err(bytes: &[u8]) -> String {
    match read_pt(bytes, "old.pt") {
        Err(Error::Format { source, reason }) => {
            assert_eq!(source, "old.pt");
            reason
        }
        other => panic!("not a format error: {other:?}"),
    }
}

#[test]
fn legacy_fixtures_match_torch() {
    for (name, twin) in LEGACY {
        let bytes = fixture_bytes(&format!("{name}.pt"));
        assert!(!bytes.starts_with(b"PK"), "{name} is a zip");
        assert!(looks_like_pt(&bytes[..16]), "{name}: sniffed from 16 bytes");
        let v = check_fixture(name);
        if twin {
            check_fixture(&format!("{name}_zip"));
        }
        assert!(!flatten_tensors(&v).is_empty());
    }
    // The protocol-4 file holds the same value as the protocol-2 one.
    assert_eq!(
        check_fixture("legacy_proto4"),
        check_fixture("legacy_mixed")
    );
}

#[test]
fn legacy_files_read_like_their_zip_twins_in_every_mode() {
    for (name, twin) in LEGACY {
        if !twin {
            continue;
        }
        let old = fixture_bytes(&format!("{name}.pt"));
        let new = fixture_bytes(&format!("{name}_zip.pt"));
        assert_eq!(read_pt(&old, name).unwrap(), read_pt(&new, name).unwrap());
        assert_eq!(
            read_pt_layout(&old, name).unwrap(),
            read_pt_layout(&new, name).unwrap()
        );
        assert_eq!(
            read_pt_raw(&old, name).unwrap(),
            read_pt_raw(&new, name).unwrap()
        );
    }
    // Views with offsets and strides into shared storages came back as torch saw them.
    let v = check_fixture("legacy_mixed");
    let full = tensor(&v, "f32.full").as_f32().unwrap().to_vec();
    let view = tensor(&v, "f32.offset_view");
    assert_eq!(view.shape, vec![2, 3]);
    assert_eq!(view.as_f32().unwrap(), &full[5..11]);
    let fid = check_fixture("legacy_fid_like");
    let tracked = fid.get("Conv2d_1a_3x3.bn.num_batches_tracked").unwrap();
    assert_eq!(tracked.as_tensor().unwrap().dtype, PtDtype::I64);
}

#[test]
fn inspect_and_convert_read_legacy_files() {
    let path = fixture_path("legacy_fid_like.pt");
    let lines = rae_cli::commands::tools::inspect(&path).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Conv2d_1a_3x3.conv.weight")),
        "{lines:?}"
    );
    let out =
        std::env::temp_dir().join(format!("rae_pt_legacy_{}.safetensors", std::process::id()));
    let n = rae_cli::commands::tools::convert(&path, &out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(n, flatten_tensors(&check_fixture("legacy_fid_like")).len());
}

// ---------------------------------------------------------------------------------------
// Hand-built legacy files.

/// The magic-number, protocol-version and sys_info pickles of a file.
fn header(version: u16, little_endian: bool) -> Vec<u8> {
    let mut out = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    out.extend(b"\x80\x02M");
    out.extend(version.to_le_bytes());
    out.push(b'.');
    let sys = Pkl::new()
        .op(b"}(")
        .str("protocol_version")
        .op(b"M")
        .op(&version.to_le_bytes())
        .str("little_endian")
        .op(if little_endian { b"\x88" } else { b"\x89" })
        .str("type_sizes")
        .op(b"}(")
        .str("short")
        .op(b"K\x02")
        .str("int")
        .op(b"K\x04")
        .str("long")
        .op(b"K\x04uu.");
    out.extend(sys.0);
    out
}

/// A whole file: header, object pickle, key list, records `(count, bytes)`.
fn legacy_file(obj: &[u8], keys: &[&str], records: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = header(1001, true);
    out.extend(obj);
    let mut list = Pkl::new().op(b"(");
    for k in keys {
        list = list.str(k);
    }
    out.extend(list.op(b"l.").0);
    for (count, data) in records {
        out.extend(count.to_le_bytes());
        out.extend(*data);
    }
    out
}

/// `{"w": FloatStorage key "0" of 4 elements viewed as [2] from offset 1}` and its storage.
fn simple_obj() -> Vec<u8> {
    Pkl::new()
        .op(b"}(")
        .str("w")
        .tensor("FloatStorage", "0", 4, 1, &[2], &[1])
        .op(b"u.")
        .0
}

#[test]
fn hand_built_legacy_file_reads() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0], false);
    let v = read_pt(&legacy_file(&simple_obj(), &["0"], &[(4, &data)]), "old.pt").unwrap();
    assert_eq!(tensor(&v, "w").as_f32().unwrap(), &[2.0, 3.0]);
    // Trailing bytes after the last record are ignored, as torch does.
    let mut file = legacy_file(&simple_obj(), &["0"], &[(4, &data)]);
    file.extend(b"trailing");
    assert!(read_pt(&file, "old.pt").is_ok());
}

/// A tensor over a legacy storage view `(view_key, offset, size)` of storage "r".
fn view_obj(offset: i32, size: i32) -> Vec<u8> {
    Pkl::new()
        .op(b"}(")
        .str("v")
        .op(b"ctorch._utils\n_rebuild_tensor_v2\n((")
        .str("storage")
        .op(b"ctorch\nFloatStorage\n")
        .str("r")
        .str("cpu")
        .int(6)
        .op(b"(")
        .str("view")
        .int(offset)
        .int(size)
        .op(b"ttQ")
        .int(1)
        .ints(&[2])
        .ints(&[1])
        .op(b"\x89ccollections\nOrderedDict\n)RtRu.")
        .0
}

#[test]
fn storage_views_read_from_their_offset_and_stay_inside() {
    let data = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], false);
    // View of elements 2..5; the tensor starts at element 1 of the view.
    let v = read_pt(
        &legacy_file(&view_obj(2, 3), &["r"], &[(6, &data)]),
        "old.pt",
    )
    .unwrap();
    assert_eq!(tensor(&v, "v").as_f32().unwrap(), &[3.0, 4.0]);
    // A view past its storage, and a tensor past its view.
    let e = legacy_err(&legacy_file(&view_obj(4, 3), &["r"], &[(6, &data)]));
    assert!(
        e.contains("storage view") && e.contains("reaches past"),
        "{e}"
    );
    let e = legacy_err(&legacy_file(&view_obj(3, 2), &["r"], &[(6, &data)]));
    assert!(e.contains("reaches past"), "{e}");
}

#[test]
fn python2_byte_strings_are_read() {
    // SHORT_BINSTRING ('U') and BINSTRING ('T') for keys and names, as Python 2 wrote.
    let obj = simple_obj();
    let mut obj2 = Vec::new();
    let mut i = 0;
    while i < obj.len() {
        if obj[i] == b'X' && i + 5 <= obj.len() && obj[i + 2..i + 5] == [0, 0, 0] {
            let n = obj[i + 1] as usize;
            obj2.extend([b'U', obj[i + 1]]);
            obj2.extend(&obj[i + 5..i + 5 + n]);
            i += 5 + n;
        } else {
            obj2.push(obj[i]);
            i += 1;
        }
    }
    assert!(obj2.len() < obj.len());
    let mut file = header(1001, true);
    file.extend(&obj2);
    file.extend(b"\x80\x02]q\x00T\x01\x00\x00\x000a.");
    file.extend(4i64.to_le_bytes());
    file.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0], false));
    let v = read_pt(&file, "old.pt").unwrap();
    assert_eq!(tensor(&v, "w").as_f32().unwrap(), &[2.0, 3.0]);
}

#[test]
fn hostile_headers_are_named() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0], false);
    let good = legacy_file(&simple_obj(), &["0"], &[(4, &data)]);
    // A damaged end of the magic number, or no STOP after it.
    for at in [13, 14] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        assert!(legacy_err(&bad).contains("bad magic number"), "{at}");
    }
    let mut bad = header(1002, true);
    bad.extend(&good[header(1001, true).len()..]);
    let e = legacy_err(&bad);
    assert!(e.contains("protocol version 1002"), "{e}");
    let mut bad = header(1001, false);
    bad.extend(&good[header(1001, true).len()..]);
    let e = legacy_err(&bad);
    assert!(e.contains("big-endian"), "{e}");
    // Torch's own file with the flag flipped.
    let mut torch = fixture_bytes("legacy.pt");
    let at = torch
        .windows(14)
        .position(|w| w == b"little_endianq")
        .unwrap()
        + 15;
    assert_eq!(torch[at], 0x88);
    torch[at] = 0x89;
    assert!(legacy_err(&torch).contains("big-endian"));
    // The tar format.
    let mut tar = vec![0u8; 1024];
    tar[257..262].copy_from_slice(b"ustar");
    let e = legacy_err(&tar);
    assert!(e.contains("tar-based"), "{e}");
}

#[test]
fn hostile_records_are_named() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0], false);
    let obj = simple_obj();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            legacy_file(&obj, &["0"], &[(5, &data)]),
            "records 5 elements but the pickle declares 4",
        ),
        (
            legacy_file(&obj, &["0"], &[(-1, &data)]),
            "records -1 elements",
        ),
        (
            legacy_file(&obj, &["0"], &[(i64::MAX, &data)]),
            "records 9223372036854775807",
        ),
        (
            legacy_file(&obj, &["0"], &[(4, &data[..15])]),
            "truncated: storage 0 holds 4",
        ),
        (
            legacy_file(&obj, &["0"], &[]),
            "truncated: the record of storage 0",
        ),
        (
            legacy_file(&obj, &[], &[]),
            "storage 0 is not in the file's list of storage keys",
        ),
        (
            legacy_file(&obj, &["0", "0"], &[(4, &data), (4, &data)]),
            "listed twice",
        ),
        (
            legacy_file(&obj, &["0", "9"], &[(4, &data), (4, &data)]),
            "storage 9 is listed but",
        ),
    ];
    for (file, needle) in cases {
        let e = legacy_err(&file);
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
    // Absurd element counts in both the pickle and the record: refused before any copy.
    for numel in [1i32 << 30, i32::MAX] {
        let obj = Pkl::new()
            .op(b"}(")
            .str("w")
            .tensor("DoubleStorage", "0", numel, 0, &[numel], &[1])
            .op(b"u.")
            .0;
        let e = legacy_err(&legacy_file(&obj, &["0"], &[(i64::from(numel), &data)]));
        assert!(e.contains("truncated") || e.contains("limit of"), "{e}");
    }
    // Globals outside the allow-list are refused by name here too.
    let obj = Pkl::new().op(b"cos\nsystem\n").str("echo").op(b"\x85R.").0;
    let e = legacy_err(&legacy_file(&obj, &[], &[]));
    assert!(e.contains("refusing global os.system"), "{e}");
}

#[test]
fn every_truncation_of_a_legacy_file_is_an_error() {
    for name in ["legacy", "legacy_mixed"] {
        let bytes = fixture_bytes(&format!("{name}.pt"));
        assert!(read_pt(&bytes, name).is_ok());
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            for result in [
                read_pt(cut, "old.pt").map(|_| ()),
                read_pt_layout(cut, "old.pt").map(|_| ()),
                read_pt_raw(cut, "old.pt").map(|_| ()),
            ] {
                let Err(Error::Format { source, .. }) = result else {
                    panic!("{name} cut to {len} bytes: {result:?}");
                };
                assert_eq!(source, "old.pt");
            }
        }
    }
}
