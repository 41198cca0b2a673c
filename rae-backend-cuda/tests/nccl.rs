//! The NCCL collective: clean errors without NCCL or without a GPU, the unique id where
//! NCCL is installed (no GPU needed), and a one-process group where a GPU is present.
//!
//! `RAE_NCCL_LIB` (a folder holding `libnccl.so.2`, or a `pip install --target` folder of
//! `nvidia-nccl-cu13`) or `RAE_REQUIRE_NCCL=1` makes a missing NCCL a failure instead of a
//! skip.

#![allow(clippy::expect_used)]

use rae_backend_cuda::{
    create, nccl_find, nccl_probe, nccl_unique_id, nccl_version, NcclGroup, NCCL_LIB_ENV,
};
use rae_core::train::{Collective, ReduceOp};
use rae_core::{Backend, Error};

/// Whether this run must have NCCL.
fn nccl_required() -> bool {
    std::env::var_os(NCCL_LIB_ENV).is_some() || std::env::var_os("RAE_REQUIRE_NCCL").is_some()
}

fn assert_clean_nccl_error(e: &Error) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(msg.contains("--dist mpi"), "no hint in: {msg}");
}

#[test]
fn a_missing_nccl_folder_is_a_clean_error() {
    let dir = std::env::temp_dir().join("rae-no-such-nccl-dir/nested");
    let err = nccl_find(Some(dir.as_os_str())).expect_err("nothing there");
    assert_clean_nccl_error(&err);
    let msg = err.to_string();
    assert!(msg.contains("NCCL was not found"), "{msg}");
    assert!(msg.contains(&format!("{NCCL_LIB_ENV}=")), "{msg}");
    assert!(
        msg.contains("nvidia/nccl/lib"),
        "the wheel layout is searched: {msg}"
    );
}

#[test]
fn the_override_finds_a_pip_target_layout() {
    let dir = std::env::temp_dir().join(format!("rae-nccl-layout-{}", std::process::id()));
    let lib = dir.join("nvidia/nccl/lib");
    std::fs::create_dir_all(&lib).expect("temp dir");
    std::fs::write(lib.join("libnccl.so.2"), b"").expect("write");
    let found = nccl_find(Some(dir.as_os_str()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.expect("found"), lib.join("libnccl.so.2"));
}

#[test]
fn the_probe_never_panics() {
    match nccl_probe() {
        Ok(()) => {
            let (major, minor, patch) = nccl_version().expect("version of a loaded NCCL");
            eprintln!("NCCL {major}.{minor}.{patch}");
            assert_eq!(major, 2);
        }
        Err(e) => {
            assert_clean_nccl_error(&e);
            assert!(!nccl_required(), "NCCL is required here: {e}");
            // Every public entry point reports the same error.
            assert_eq!(nccl_unique_id().expect_err("no NCCL"), e);
            assert_eq!(nccl_version().expect_err("no NCCL"), e);
            eprintln!("skipping: {e}");
        }
    }
}

#[test]
fn unique_ids_need_nccl_but_no_gpu() {
    if nccl_probe().is_err() {
        assert!(!nccl_required(), "NCCL is required here");
        eprintln!("skipping: NCCL not found");
        return;
    }
    let id = nccl_unique_id().expect("ncclGetUniqueId works without a GPU");
    assert_eq!(id.len(), 128);
    assert!(id.iter().any(|&x| x != 0), "an all-zero id");
    let other = nccl_unique_id().expect("second id");
    assert_ne!(id.to_vec(), other.to_vec(), "two ids are equal");
}

#[test]
fn a_group_needs_a_gpu_and_fails_cleanly_without() {
    let b = match create(0) {
        Ok(b) => b,
        Err(e) => {
            // No backend, so no group: the error comes from creating the backend.
            assert!(matches!(e, Error::Backend { .. }), "{e:?}");
            eprintln!("skipping the GPU part: {e}");
            return;
        }
    };
    let id = match nccl_unique_id() {
        Ok(id) => id,
        Err(e) => {
            assert_clean_nccl_error(&e);
            let err = NcclGroup::new(&b, 0, 1, [1; 128]).expect_err("no NCCL");
            assert_eq!(err, e);
            assert!(!nccl_required(), "NCCL is required here: {e}");
            return;
        }
    };
    one_process_group(&b, id);
}

/// A communicator of one process on the one GPU: every operation is the identity, which
/// checks the device pointers, counts, streams and the fresh-buffer path.
fn one_process_group(b: &rae_backend_cuda::CudaBackend, id: [u8; 128]) {
    assert!(NcclGroup::new(b, 1, 1, id).is_err(), "rank 1 of 1");
    let mut g = NcclGroup::new(b, 0, 1, id).expect("a group of one");
    assert_eq!((g.rank(), g.world()), (0, 1));

    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let alone = b.upload(&data, &[10, 100]).expect("upload");
    let shared = b.upload(&data[..7], &[7]).expect("upload");
    let snapshot = shared.clone();
    let mut ts = vec![alone, shared];
    // More tensors than one NCCL group holds.
    for i in 0..(rae_backend_cuda::nccl::GROUP_OPS + 5) {
        ts.push(b.upload(&[i as f32, -1.0, 0.5], &[3]).expect("upload"));
    }
    let expected: Vec<Vec<f32>> = ts.iter().map(|t| b.download(t).expect("read")).collect();

    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        g.all_reduce(b, &mut ts, op).expect("all_reduce");
        for (t, e) in ts.iter().zip(&expected) {
            assert_eq!(&b.download(t).expect("read"), e, "{op:?}");
        }
    }
    g.broadcast(b, &mut ts, 0).expect("broadcast");
    for (t, e) in ts.iter().zip(&expected) {
        assert_eq!(&b.download(t).expect("read"), e, "broadcast");
    }
    assert!(g.broadcast(b, &mut ts, 1).is_err(), "root 1 of 1");
    // The clone kept its values (the shared buffer was not written).
    assert_eq!(b.download(&snapshot).expect("read"), data[..7].to_vec());

    let mut v = [1.5, -2.25, 1e300];
    g.reduce_scalars(&mut v, ReduceOp::Mean)
        .expect("reduce_scalars");
    assert_eq!(v, [1.5, -2.25, 1e300]);
    g.reduce_scalars(&mut [], ReduceOp::Sum)
        .expect("nothing to reduce");
    g.barrier().expect("barrier");
}
