//! Adapter choice of the WGPU backend: listing never panics, an unavailable choice is an
//! error that lists what exists, a CPU adapter is used when asked for, and `auto` prefers
//! a GPU over a CPU adapter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_backend_wgpu::{adapters, AdapterChoice, AdapterKind, WgpuOptions};
use rae_core::Backend;

fn require_wgpu() -> bool {
    std::env::var("RAE_REQUIRE_WGPU").as_deref() == Ok("1")
}

#[test]
fn listing_adapters_does_not_panic() {
    let list = std::panic::catch_unwind(adapters).expect("listing adapters must not panic");
    if require_wgpu() {
        assert!(
            !list.is_empty(),
            "RAE_REQUIRE_WGPU=1 but no WGPU adapter is listed"
        );
    }
    if list.is_empty() {
        rae_tests::conformance::report_skip(
            "no WGPU adapter on this machine (listing is empty, as it may be)",
        );
    }
    for a in &list {
        assert!(!a.name.is_empty());
    }
}

#[test]
fn a_missing_gpu_index_is_an_error_naming_the_adapters() {
    let opts = WgpuOptions {
        adapter: AdapterChoice::Gpu(1000),
        quiet: true,
    };
    let err = opts.build().unwrap_err().to_string();
    assert!(err.contains("Gpu(1000)"), "{err}");
    for a in adapters() {
        assert!(
            err.contains(&a.name),
            "the error should list {}: {err}",
            a.name
        );
    }
}

#[test]
fn auto_prefers_a_gpu_and_cpu_is_used_when_asked() {
    let list = adapters();
    let auto = WgpuOptions {
        adapter: AdapterChoice::Auto,
        quiet: true,
    };
    let has_gpu = list.iter().any(|a| {
        matches!(
            a.kind,
            AdapterKind::Discrete | AdapterKind::Integrated | AdapterKind::Virtual
        )
    });
    let has_cpu = list.iter().any(|a| a.kind == AdapterKind::Cpu);
    match auto.pick() {
        Ok(a) if has_gpu => assert_ne!(a.kind, AdapterKind::Cpu, "auto picked {a:?}"),
        Ok(a) => assert_eq!(a.kind, AdapterKind::Cpu, "auto picked {a:?}"),
        Err(e) => assert!(
            !has_gpu && !has_cpu,
            "auto failed with adapters present: {e}"
        ),
    }
    let cpu = WgpuOptions {
        adapter: AdapterChoice::Cpu,
        quiet: true,
    };
    if has_cpu {
        let b = cpu.build().unwrap();
        assert!(b.name().contains("CPU adapter"), "{}", b.name());
        let x = b.upload(&[1.0, 2.0, 3.0], &[3]).unwrap();
        assert_eq!(
            b.download(&b.scale(&x, -1.0).unwrap()).unwrap(),
            vec![-1.0, -2.0, -3.0]
        );
    } else {
        assert!(
            cpu.build().is_err(),
            "no CPU adapter, yet a CPU backend was built"
        );
        assert!(
            !require_wgpu(),
            "RAE_REQUIRE_WGPU=1 expects lavapipe (a CPU adapter)"
        );
        rae_tests::conformance::report_skip("no CPU adapter to build");
    }
}

/// A buffer larger than the device can bind (lavapipe: 128 MiB of storage binding) is an
/// error naming its size, from `full` and from `upload`, not a panic inside the runtime's
/// thread that leaves the caller waiting; the backend stays usable afterwards.
#[test]
fn a_buffer_beyond_the_binding_limit_is_an_error() {
    let Some(b) = rae_tests::conformance::wgpu_or_skip() else {
        return;
    };
    let n = 40_000_000; // 160 MB of f32
    match b.full(&[n], 1.0) {
        Ok(t) => assert_eq!(t.numel(), n), // a device with a larger limit
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("160000000 bytes") && msg.contains("bind"),
                "{msg}"
            );
            let host = vec![0.5f32; n];
            let e = b.upload(&host, &[n]).unwrap_err().to_string();
            assert!(e.contains("160000000 bytes"), "{e}");
        }
    }
    let small = b.upload(&[1.0, 2.0, 3.0], &[3]).unwrap();
    assert_eq!(b.download(&small).unwrap(), vec![1.0, 2.0, 3.0]);
}
