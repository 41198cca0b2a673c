//! The CUDA backend on this machine: without a driver, construction must return an error
//! that says so (no panic, no abort); with one, construction must succeed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn cuda_construction_fails_cleanly_or_succeeds() {
    let probe =
        std::panic::catch_unwind(rae_backend_cuda::probe).expect("probing for CUDA must not panic");
    let made = std::panic::catch_unwind(|| rae_backend_cuda::create(0))
        .expect("creating the CUDA backend must not panic");
    match probe {
        Err(e) => {
            let msg = e.to_string();
            assert!(made.is_err(), "probe failed ({msg}) but create succeeded");
            assert!(
                msg.contains("cuda") && (msg.contains("driver") || msg.contains("device")),
                "the error must say the CUDA driver or device is missing: {msg}"
            );
            eprintln!("no CUDA here, as expected: {msg}");
        }
        Ok(n) => {
            assert!(n >= 1);
            let b = made.expect("a CUDA driver with a device is present, so create must work");
            use rae_core::Backend;
            let x = b.upload(&[1.0, -2.0, 3.0], &[3]).unwrap();
            assert_eq!(
                b.download(&b.scale(&x, 2.0).unwrap()).unwrap(),
                vec![2.0, -4.0, 6.0]
            );
        }
    }
    let bad = rae_backend_cuda::create(usize::MAX);
    assert!(
        bad.is_err(),
        "a device index past the count must be an error"
    );
}
