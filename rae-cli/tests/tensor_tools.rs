//! `inspect` and `convert` on hostile and large tensor files (issue 10): listing reads no
//! tensor data, conversion keeps integer dtypes instead of widening them to i64, loading is
//! linear in the number of tensors, and dtype errors name the file and the tensor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod zipfile;

use std::io::Write;
use std::path::{Path, PathBuf};

use rae_cli::commands::tools::{convert, inspect};
use rae_cli::store::load_tensor_file;
use rae_core::safetensors::{serialize, Dtype, SafeTensors, TensorOut};

/// A fresh scratch folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tensor-tools-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A safetensors file from a raw header text and a data buffer.
fn st_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn inspect_reads_only_the_safetensors_header() {
    // A 64 GiB U8 tensor in a sparse file: listing it must not read (let alone widen to
    // i64, which took 9 bytes of memory per element) the data.
    let dir = tmp("sparse");
    let path = dir.join("huge.safetensors");
    let n: u64 = 64 << 30;
    let header = format!(
        r#"{{"__metadata__":{{"note":"sparse"}},"big":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#
    );
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.set_len(8 + header.len() as u64 + n).unwrap();
    drop(f);
    let lines = inspect(&path).unwrap();
    assert!(lines[0].contains("safetensors, 1 tensors"), "{lines:?}");
    assert!(
        lines[1].contains("big") && lines[1].contains("U8") && lines[1].contains(&n.to_string()),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("metadata note: sparse")));
    // One byte short: the header's own check names the file and the tensor.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8 + header.len() as u64 + n - 1)
        .unwrap();
    let e = inspect(&path).unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("tensor big"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn convert_keeps_integer_and_fp8_dtypes() {
    let dir = tmp("convert");
    let input = dir.join("in.safetensors");
    let u8s: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let i32s: Vec<u8> = [-5i32, 70000]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let outs = [
        TensorOut::raw("u8", &[10, 100], Dtype::U8, &u8s),
        TensorOut::raw("flags", &[3], Dtype::Bool, &[1, 0, 1]),
        TensorOut::raw("i32", &[2], Dtype::I32, &i32s),
        TensorOut::raw("h", &[1], Dtype::F16, &[0x00, 0x3C]),
        TensorOut::raw("f8", &[2], Dtype::F8E4M3, &[0x38, 0x40]),
    ];
    std::fs::write(
        &input,
        serialize(&outs, &[("k".into(), "v".into())]).unwrap(),
    )
    .unwrap();
    let output = dir.join("out.safetensors");
    assert_eq!(convert(&input, &output).unwrap(), 5);
    let bytes = std::fs::read(&output).unwrap();
    let st = SafeTensors::parse(&bytes, "out").unwrap();
    let u = st.get("u8").unwrap();
    assert_eq!(
        (u.dtype, u.shape.as_slice(), u.data),
        (Dtype::U8, [10, 100].as_slice(), u8s.as_slice())
    );
    assert_eq!(st.get("flags").unwrap().dtype, Dtype::Bool);
    assert_eq!(st.read_i64("i32").unwrap(), [-5, 70000]);
    let h = st.get("h").unwrap();
    assert_eq!((h.dtype, h.to_f32().unwrap()), (Dtype::F32, vec![1.0]));
    assert_eq!(st.get("f8").unwrap().data, [0x38, 0x40]);
    assert_eq!(st.metadata_value("k"), Some("v"));
    assert_eq!(
        st.metadata_value("converted_from"),
        Some(input.display().to_string().as_str())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dtype_errors_of_loaded_files_name_the_file_and_the_tensor() {
    let dir = tmp("dtypes");
    let cases: [(&str, &str, &[u8], &str); 3] = [
        ("u64", "U64", &[0xFF; 8], "does not fit"),
        ("flag", "BOOL", &[3], "not 0 or 1"),
        ("f8", "F8_E4M3", &[0x38], "F8_E4M3"),
    ];
    for (name, dtype, data, needle) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        let n = data.len() / if dtype == "U64" { 8 } else { 1 };
        let header = format!(
            r#"{{"{name}":{{"dtype":"{dtype}","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            data.len()
        );
        std::fs::write(&path, st_file(&header, data)).unwrap();
        let e = load_tensor_file(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string())
                && e.contains(&format!("tensor {name}"))
                && e.contains(needle),
            "{e}"
        );
        // inspect only lists, so it reads these files fine.
        assert!(inspect(&path).unwrap()[1].contains(dtype));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_of_two_hundred_thousand_tensors_is_linear() {
    // 173 s in the release build when loading was quadratic; the bound only guards
    // against that returning.
    let dir = tmp("many");
    let path = dir.join("many.safetensors");
    let names: Vec<String> = (0..200_000).map(|i| format!("layer.{i}.w")).collect();
    let one = [1.0f32];
    let outs: Vec<TensorOut<'_>> = names
        .iter()
        .map(|n| TensorOut::f32(n, &[1], &one))
        .collect();
    std::fs::write(&path, serialize(&outs, &[]).unwrap()).unwrap();
    let start = std::time::Instant::now();
    let lines = inspect(&path).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(lines.len(), 200_002);
    assert!(lines[200_001].contains("total elements: 200000"));
    let _ = writeln!(
        std::io::stderr().lock(),
        "tensor_tools: inspect of 200000 safetensors tensors took {elapsed:?}"
    );
    assert!(elapsed.as_secs() < 20, "{elapsed:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// `.pt` files: a stored zip and a hand-assembled pickle.

/// Pickle ops pushing `_rebuild_tensor_v2` of a whole 1-D storage `key` of `class`.
fn tensor_ops(class: &str, key: &str, numel: u8) -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((\x8c\x07storage".to_vec();
    p.extend(format!("ctorch\n{class}\n").as_bytes());
    p.extend([0x8c, key.len() as u8]);
    p.extend(key.as_bytes());
    p.extend(b"\x8c\x03cpuK");
    p.push(numel);
    p.extend(b"tQK\x00K");
    p.push(numel);
    p.extend(b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
    p
}

#[test]
fn pt_files_are_listed_without_their_data_and_converted_in_their_dtype() {
    let dir = tmp("pt");
    let mut p = b"\x80\x02}(\x8c\x02u8".to_vec();
    p.extend(tensor_ops("ByteStorage", "0", 6));
    p.extend(b"\x8c\x01h");
    p.extend(tensor_ops("HalfStorage", "1", 1));
    p.extend(b"u.");
    let file = zipfile::make_zip(
        &[
            ("m/data.pkl", &p),
            ("m/data/0", &[9, 8, 7, 6, 5, 4]),
            ("m/data/1", &[0x00, 0xC0]),
        ],
        false,
    );
    let input = dir.join("small.pt");
    std::fs::write(&input, file).unwrap();
    let lines = inspect(&input).unwrap();
    assert!(
        lines[0].contains("PyTorch zip checkpoint, 2 tensors"),
        "{lines:?}"
    );
    assert!(lines[1].contains("u8") && lines[1].contains("uint8") && lines[1].contains("[6]"));
    let output = dir.join("small.safetensors");
    assert_eq!(convert(&input, &output).unwrap(), 2);
    let bytes = std::fs::read(&output).unwrap();
    let st = SafeTensors::parse(&bytes, "out").unwrap();
    let u = st.get("u8").unwrap();
    assert_eq!(
        (u.dtype, u.data),
        (Dtype::U8, [9u8, 8, 7, 6, 5, 4].as_slice())
    );
    assert_eq!(st.read_f32("h").unwrap(), [-2.0]);

    // A memo bomb: inspect and convert both refuse it, naming the file and the limit.
    let mut p = vec![0x80, 2, b'(', b'X'];
    p.extend((1u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(b'z', 1 << 20));
    p.extend([b'q', 0]);
    p.extend(std::iter::repeat_n([b'h', 0], 299).flatten());
    p.extend([b'l', b'.']);
    let bomb = dir.join("bomb.pt");
    std::fs::write(&bomb, zipfile::make_zip(&[("m/data.pkl", &p)], false)).unwrap();
    for e in [
        inspect(&bomb).unwrap_err().to_string(),
        convert(&bomb, &dir.join("never.safetensors"))
            .unwrap_err()
            .to_string(),
    ] {
        assert!(
            e.contains(&bomb.display().to_string())
                && e.contains("a string of 1048576 bytes")
                && e.contains("limit of"),
            "{e}"
        );
    }
    assert!(!dir.join("never.safetensors").exists());
    // Not a file at all: refused up front instead of blocking (a FIFO) or failing late.
    for e in [
        inspect(&dir).unwrap_err().to_string(),
        convert(&dir, &dir.join("never.safetensors"))
            .unwrap_err()
            .to_string(),
    ] {
        assert!(e.contains("not a regular file"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
