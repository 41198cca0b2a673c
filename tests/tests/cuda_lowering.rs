//! Every kernel of `rae-kernels` lowers to CUDA C++ through CubeCL's CUDA compiler, without
//! a GPU: a kernel that only works on WGPU fails here. The list of variants comes from
//! `rae_kernels::lowering`; a guard checks that it names every `#[cube(launch_unchecked)]`
//! function of `rae-kernels/src/kernels/`, so a new kernel cannot be left out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Names of the launchable kernel functions in the kernel sources.
fn kernel_fns_in_sources() -> BTreeSet<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rae-kernels/src/kernels");
    let mut names = BTreeSet::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let mut lines = src.lines();
        while let Some(line) = lines.next() {
            if !line.trim_start().starts_with("#[cube(launch") {
                continue;
            }
            let decl = lines
                .by_ref()
                .find(|l| l.contains("fn "))
                .unwrap_or_else(|| panic!("{}: a #[cube] without fn", path.display()));
            let after = decl.split("fn ").nth(1).unwrap();
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_kernel_has_lowering_variants() {
    let in_sources = kernel_fns_in_sources();
    assert!(in_sources.len() >= 20, "found only {in_sources:?}");
    let listed: BTreeSet<String> = rae_kernels::lowering::variants()
        .iter()
        .map(|v| v.kernel().to_string())
        .collect();
    let missing: Vec<_> = in_sources.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "kernels without a lowering variant (add them to their file's `variants`): {missing:?}"
    );
    let stale: Vec<_> = listed.difference(&in_sources).collect();
    assert!(
        stale.is_empty(),
        "variants of kernels that do not exist: {stale:?}"
    );
}

#[test]
fn every_kernel_lowers_to_cuda_cpp() {
    let lowered = rae_backend_cuda::lower_kernels();
    assert!(!lowered.is_empty());
    let mut failures = Vec::new();
    for (name, result) in &lowered {
        match result {
            Ok(src) => {
                assert!(
                    src.contains("__global__") || src.contains("extern \"C\""),
                    "{name}: the CUDA source has no kernel entry point:\n{src}"
                );
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variants do not lower to CUDA:\n{}",
        failures.len(),
        lowered.len(),
        failures.join("\n")
    );
    eprintln!("{} kernel variants lowered to CUDA C++", lowered.len());
}

#[test]
fn every_kernel_lowers_to_wgsl() {
    let lowered = rae_backend_wgpu::lower_kernels();
    let failures: Vec<String> = lowered
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (name, result) in &lowered {
        let src = result.as_ref().unwrap();
        assert!(
            src.contains("@compute"),
            "{name}: no compute entry point in\n{src}"
        );
    }
}

/// The CUDA source of one variant, for inspection (`--ignored --nocapture`).
#[test]
#[ignore]
fn print_one_cuda_kernel() {
    let name =
        std::env::var("RAE_KERNEL").unwrap_or_else(|_| "philox_fill_kernel normal=true".into());
    for (n, r) in rae_backend_cuda::lower_kernels() {
        if n == name {
            println!("{}", r.unwrap());
        }
    }
}
