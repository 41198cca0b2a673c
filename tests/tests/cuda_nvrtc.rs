//! Every kernel variant of `rae-kernels`, lowered to CUDA C++ by CubeCL, really compiles
//! with NVRTC to PTX for sm_80 and sm_90a, with the options CubeCL's CUDA runtime uses. No
//! GPU and no driver: NVRTC and the headers come from the CUDA toolkit or the
//! `nvidia-cuda-{nvrtc,runtime,cccl}` pip packages (`.ci/run` installs those and sets
//! `CUDA_PATH` and `LD_LIBRARY_PATH`). Without NVRTC the test reports a skip, unless
//! `RAE_REQUIRE_NVRTC=1` (CI) makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::sync::Mutex;

/// NVRTC and the headers, or `None` (a reported skip) when they are absent and not required.
fn toolkit() -> Option<rae_backend_cuda::IncludeDirs> {
    let required = std::env::var("RAE_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    let found = if rae_backend_cuda::nvrtc_present() {
        rae_backend_cuda::include_dirs().map_err(|e| e.to_string())
    } else {
        Err("libnvrtc could not be loaded".to_string())
    };
    match found {
        Ok(dirs) => Some(dirs),
        Err(why) if required => panic!("RAE_REQUIRE_NVRTC=1 but: {why}"),
        Err(why) => {
            rae_tests::conformance::report_skip(&format!("NVRTC compile test: {why}"));
            None
        }
    }
}

#[test]
fn every_kernel_variant_compiles_with_nvrtc() {
    let Some(dirs) = toolkit() else { return };
    let lowered = rae_backend_cuda::lower_kernels();
    assert!(lowered.len() >= 100, "only {} variants", lowered.len());
    let archs = [80u32, 90];
    // Two threads: NVRTC is thread safe per program.
    let jobs: Vec<(u32, &(String, Result<String, String>))> = archs
        .iter()
        .flat_map(|&a| lowered.iter().map(move |v| (a, v)))
        .collect();
    let failures = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(sm, (name, src))) = jobs.get(i) else {
                    break;
                };
                let result = match src {
                    Ok(src) => rae_backend_cuda::compile_ptx(src, sm, &dirs).map(|ptx| {
                        assert!(ptx.contains(".entry"), "{name} sm_{sm}: PTX without entry");
                    }),
                    Err(e) => Err(format!("did not lower: {e}")),
                };
                if let Err(log) = result {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{name} (sm_{sm}):\n{log}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    // Past the harness's capture, so CI logs show the count.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "NVRTC: {} kernel variants x {} architectures compiled, {} failures",
        lowered.len(),
        archs.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} compilations failed:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_source_that_does_not_compile_is_reported_with_the_log() {
    let Some(dirs) = toolkit() else { return };
    let err = rae_backend_cuda::compile_ptx(
        "extern \"C\" __global__ void k(float2* p) { p[0] = -p[0]; }",
        80,
        &dirs,
    )
    .unwrap_err();
    assert!(err.contains("operator"), "log: {err}");
    let ok = rae_backend_cuda::compile_ptx(
        "#include <cuda_fp16.h>\nextern \"C\" __global__ void k(float* p) { p[0] = 1.0f; }",
        90,
        &dirs,
    )
    .unwrap();
    assert!(ok.contains("sm_90a"), "{ok}");
}

#[test]
fn missing_toolkit_headers_name_cuda_path() {
    let dir = std::env::temp_dir().join(format!("rae-no-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = rae_backend_cuda::include_dirs_from(Some(OsStr::new(&dir)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("CUDA_PATH"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    // A folder with the headers is accepted, with its cccl subfolder when present.
    std::fs::create_dir_all(dir.join("include/cccl")).unwrap();
    std::fs::write(dir.join("include/cuda_runtime.h"), "").unwrap();
    let found = rae_backend_cuda::include_dirs_from(Some(OsStr::new(&dir))).unwrap();
    assert_eq!(found.include, dir.join("include"));
    assert_eq!(found.cccl, Some(dir.join("include/cccl")));
    std::fs::remove_dir_all(&dir).unwrap();
}
