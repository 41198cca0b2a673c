//! Unit tests of the pickle machine.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::pt::budget::Budget;
use crate::pt::PtDtype;

/// The machine with the budget of a file holding only this pickle.
fn unpickle(code: &[u8]) -> Result<Unpickled, String> {
    super::unpickle(code, &mut Budget::for_file(code.len()))
}

fn run(code: &[u8]) -> Result<(Vec<Node>, Node), String> {
    let u = unpickle(code)?;
    let root = u.nodes[u.root].clone();
    Ok((u.nodes, root))
}

#[test]
fn integers_of_every_width() {
    // LONG1 of -2 (0xFE), BININT -5, BININT2 65535, BININT1 200, LONG1 2^63-1.
    let mut code = vec![0x80, 2, b'('];
    code.extend([0x8a, 1, 0xFE]);
    code.push(b'J');
    code.extend((-5i32).to_le_bytes());
    code.extend([b'M', 0xFF, 0xFF, b'K', 200]);
    code.extend([0x8a, 8]);
    code.extend(i64::MAX.to_le_bytes());
    code.extend([0x8a, 0]); // LONG1 of zero length is 0
    code.extend([b'l', b'.']);
    let (nodes, root) = run(&code).unwrap();
    let Node::List(items) = root else {
        panic!("not a list")
    };
    let ints: Vec<_> = items.iter().map(|&i| nodes[i].clone()).collect();
    assert_eq!(
        ints,
        vec![
            Node::Int(-2),
            Node::Int(-5),
            Node::Int(65535),
            Node::Int(200),
            Node::Int(i64::MAX),
            Node::Int(0)
        ]
    );
}

#[test]
fn long_wider_than_64_bits_is_refused() {
    let mut code = vec![0x80, 2, 0x8a, 9];
    code.extend([1u8; 9]);
    code.push(b'.');
    let err = unpickle(&code).unwrap_err();
    assert!(err.contains("64 bits"), "{err}");
}

#[test]
fn binfloat_is_big_endian() {
    let mut code = vec![0x80, 2, b'G'];
    code.extend(1.5f64.to_be_bytes());
    code.push(b'.');
    assert_eq!(run(&code).unwrap().1, Node::Float(1.5));
}

#[test]
fn memo_shares_the_mutated_dict() {
    // d = {}; memo[0] = d; l = [d, d]; d['k'] = 1  -> both list items are the same dict.
    let code = [
        0x80, 2, b'}', b'q', 0, b']', b'h', 0, b'a', b'h', 0, b'a', b'h', 0, 0x8c, 1, b'k', b'K',
        1, b's', b'0', b'.',
    ];
    let (nodes, root) = run(&code).unwrap();
    let Node::List(items) = root else {
        panic!("not a list")
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], items[1]);
    let Node::Dict(pairs) = &nodes[items[0]] else {
        panic!("not a dict")
    };
    assert_eq!(pairs.len(), 1);
    assert_eq!(nodes[pairs[0].1], Node::Int(1));
}

#[test]
fn refuses_unlisted_globals_by_name() {
    let err = unpickle(b"\x80\x02cbuiltins\neval\n.").unwrap_err();
    assert!(err.contains("builtins.eval"), "{err}");
    let err = unpickle(b"\x80\x04\x8c\x05posix\x8c\x06system\x93.").unwrap_err();
    assert!(err.contains("posix.system"), "{err}");
    // A storage class is allowed as a name but is not callable.
    let err = unpickle(b"\x80\x02ctorch\nFloatStorage\n)R.").unwrap_err();
    assert!(err.contains("persistent id"), "{err}");
}

#[test]
fn memo_references_share_strings_and_long_argument_tuples_are_refused() {
    // One string named 1000 times through the memo: one copy in the arena.
    let mut code = vec![0x80, 2, b'(', 0x8c, 3, b'a', b'b', b'c', b'q', 0];
    code.extend(std::iter::repeat_n([b'h', 0], 999).flatten());
    code.extend([b'l', b'.']);
    let u = unpickle(&code).unwrap();
    let Node::List(items) = &u.nodes[u.root] else {
        panic!("not a list")
    };
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|&i| i == items[0]));
    // REDUCE of OrderedDict with a 10-item argument tuple is refused before copying it.
    let mut code = b"\x80\x02ccollections\nOrderedDict\n(".to_vec();
    code.extend(std::iter::repeat_n(b'N', 10));
    code.extend(b"tR.");
    let err = unpickle(&code).unwrap_err();
    assert!(err.contains("10 arguments"), "{err}");
}

#[test]
fn sizes_copied_from_a_shared_tuple_are_charged_to_the_budget() {
    // A 1000-number size tuple, memoised, used by 2000 tensors: 2000 × 16 KB of sizes and
    // strides from a pickle of a few KB, more than the budget of a 1-byte file allows
    // once the floor is lowered by spending it first.
    let mut code =
        b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpuK\x01tQq\x01("
            .to_vec();
    code.extend(std::iter::repeat_n([b'K', 1], 1000).flatten());
    code.extend([b't', b'q', 2]);
    for _ in 0..2000 {
        code.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(h\x01K\x00h\x02h\x02tR0");
    }
    code.extend(b"N.");
    let mut budget = Budget::for_file(0);
    budget
        .spend(crate::pt::BYTE_BUDGET_FLOOR - 1_000_000, String::new)
        .unwrap();
    let err = super::unpickle(&code, &mut budget).unwrap_err();
    assert!(
        err.contains("tuple of 1000 numbers") && err.contains("limit"),
        "{err}"
    );
}

#[test]
fn malformed_programs_are_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "STOP"),
        (b"\x80\x02", "STOP"),
        (b"\x80\x02.", "underflow"),
        (b"\x80\x02h\x07.", "memo key 7"),
        (b"\x80\x02K\x01s.", "underflow"),
        (b"\x80\x02(K\x01\x86.", "underflow"),
        (b"\x80\x02K\x00K\x01K\x02s.", "not a dict"),
        (b"\x80\x02t.", "MARK"),
        (
            b"\x80\x02X\xff\xff\xff\x7f.",
            "larger than the whole pickle",
        ),
        (b"\x80\x02X\x05\x00\x00\x00ab", "truncated"),
        (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "UTF-8"),
        (b"\x80\x02I12\n.", "unsupported pickle opcode 0x49 'I'"),
        (b"\x80\x09N.", "protocol 9"),
        (b"\x80\x02NN\x81.", "unsupported pickle opcode 0x81"),
        (b"\x80\x02N)R.", "not an allowed global"),
        (b"\x80\x02K\x01}b.", "BUILD"),
    ];
    for (code, needle) in cases {
        let err = unpickle(code).unwrap_err();
        assert!(err.contains(needle), "{code:?}: {err}");
    }
}

#[test]
fn persistent_ids_must_name_plain_storage_keys() {
    let pid = |key: &str| {
        let mut c = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
        c.push(0x8c);
        c.push(key.len() as u8);
        c.extend(key.as_bytes());
        c.extend(b"\x8c\x03cpuK\x04tQ.");
        c
    };
    let (_, root) = run(&pid("0")).unwrap();
    assert_eq!(
        root,
        Node::Storage(StorageRef {
            dtype: PtDtype::F32,
            key: "0".into(),
            numel: 4,
            view: None
        })
    );
    for bad in ["../x", "a/b", ""] {
        assert!(unpickle(&pid(bad)).is_err(), "{bad}");
    }
}

#[test]
fn python2_strings_and_the_end_of_a_pickle() {
    // SHORT_BINSTRING and BINSTRING read as UTF-8; `len` counts the bytes up to STOP.
    let code = b"\x80\x02(U\x02abT\x03\x00\x00\x00cdel.trailing";
    let u = unpickle(code).unwrap();
    assert_eq!(u.len, code.len() - "trailing".len());
    let Node::List(items) = &u.nodes[u.root] else {
        panic!("not a list");
    };
    let strs: Vec<_> = items.iter().map(|&i| u.nodes[i].clone()).collect();
    assert_eq!(strs, [Node::Str("ab".into()), Node::Str("cde".into())]);
    assert!(unpickle(b"\x80\x02T\xff\xff\xff\xff.").is_err());
}

#[test]
fn legacy_persistent_ids_carry_their_view() {
    let pid = |view: &[u8]| {
        let mut c = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
        c.extend(b"\x8c\x010\x8c\x03cpuK\x06");
        c.extend(view);
        c.extend(b"tQ.");
        c
    };
    let (_, root) = run(&pid(b"N")).unwrap();
    assert!(matches!(
        root,
        Node::Storage(StorageRef {
            view: None,
            numel: 6,
            ..
        })
    ));
    let (_, root) = run(&pid(b"(\x8c\x011K\x02K\x03t")).unwrap();
    let Node::Storage(s) = root else {
        panic!("not a storage");
    };
    assert_eq!(
        s.view,
        Some(node::StorageView {
            offset: 2,
            numel: 3
        })
    );
    for bad in [
        &b"K\x01"[..],
        b"(K\x02K\x03t",
        b"(\x8c\x011J\xff\xff\xff\xffK\x03t",
    ] {
        assert!(unpickle(&pid(bad)).is_err());
    }
}
