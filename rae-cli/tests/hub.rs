//! Hugging Face hub ids in place of paths: read from a fake cache offline (`--rae org/name`,
//! `@main`, `@<commit>`, a tag, files inside), a local path winning over an id, errors that
//! name the id, revision, file and cache folder, hostile ids refused without a panic; and
//! with the `hub` feature, downloads from a local stand-in of the hub (then offline from the
//! cache once it is gone), and a 404 in words.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[cfg(feature = "hub")]
#[path = "hub/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{tiny_rae, tmp, write_rae_dir};
use rae_core::CpuBackend;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Runs the binary on the CPU with a clean hub environment plus `env`, in `cwd`.
fn run_env(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rae-cli"));
    c.args(["--backend", "cpu"]).args(args);
    for k in [
        "HF_HUB_CACHE",
        "HF_HOME",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "XDG_CACHE_HOME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(k);
    }
    // Nothing here may reach the real hub: a closed local port unless a test sets another.
    c.env("HF_ENDPOINT", "http://127.0.0.1:9");
    c.envs(env.iter().copied());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().unwrap()
}

fn ok_env(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> String {
    let o = run_env(args, env, cwd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rae-cli {args:?} failed:\n{err}");
    err
}

fn fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run_env(args, env, None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "rae-cli {args:?} should fail:\n{err}");
    assert!(
        !err.contains("panicked"),
        "rae-cli {args:?} panicked:\n{err}"
    );
    err
}

/// A tiny RAE folder (with statistics) and a 16×16 test image.
fn rae_and_image(d: &Path) -> (PathBuf, PathBuf) {
    let b = CpuBackend::new();
    let rae = tiny_rae(&b, 8, 4, 4);
    let dir = d.join("rae");
    write_rae_dir(&b, &rae, &dir, true);
    let img = d.join("img.png");
    image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, 99])
    })
    .save(&img)
    .unwrap();
    (dir, img)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Every file under `dir`, by `/`-separated relative path.
#[cfg(feature = "hub")]
fn files_of(dir: &Path, base: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{base}{}", e.file_name().to_str().unwrap());
        if e.file_type().unwrap().is_dir() {
            files_of(&e.path(), &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
}

/// A cache holding `rae` as `org/name` at commit [`SHA`], with `refs/main` and `refs/v1`.
fn fake_cache(cache: &Path, rae: &Path) {
    let repo = cache.join("models--org--name");
    copy_dir(rae, &repo.join("snapshots").join(SHA));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    std::fs::write(repo.join("refs/v1"), format!("{SHA}\n")).unwrap();
}

fn reconstruct(rae_flags: &[&str], img: &Path, out: &Path) -> Vec<String> {
    let mut a = vec!["reconstruct"];
    a.extend_from_slice(rae_flags);
    a.extend(["--out", out.to_str().unwrap(), img.to_str().unwrap()]);
    a.iter().map(|s| s.to_string()).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn pngs(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn offline_cache_ids_resolve_like_the_folder() {
    let d = tmp("hub-offline");
    let (rae, img) = rae_and_image(&d);
    let cache = d.join("cache");
    fake_cache(&cache, &rae);
    let base = d.join("base");
    let a = reconstruct(&["--rae", rae.to_str().unwrap()], &img, &base);
    ok_env(&strs(&a), &[], None);
    let want = pngs(&base);
    assert!(!want.is_empty());
    let env = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let sha_id = format!("org/name@{SHA}");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--rae", "org/name"],
        vec!["--rae", "org/name@main"],
        vec!["--rae", &sha_id],
        vec!["--rae", "hf://org/name@v1"],
        vec![
            "--encoder",
            "org/name/encoder",
            "--decoder",
            "org/name/decoder.safetensors",
            "--stats",
            "org/name@v1/stats.safetensors",
        ],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let out = d.join(format!("out{i}"));
        let a = reconstruct(flags, &img, &out);
        let log = ok_env(&strs(&a), &env, None);
        assert!(log.contains("PSNR"), "{flags:?}: {log}");
        assert_eq!(pngs(&out), want, "{flags:?}");
    }
    // Without HF_HUB_OFFLINE: a cached folder is used as it is, with no network call (the
    // endpoint is a closed port, so a listing would fail).
    let out = d.join("out-online");
    let a = reconstruct(&["--rae", "org/name"], &img, &out);
    ok_env(
        &strs(&a),
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
        None,
    );
    assert_eq!(pngs(&out), want);
    // HF_HOME/hub is the cache when HF_HUB_CACHE is not set.
    let home = d.join("home");
    fake_cache(&home.join("hub"), &rae);
    let out = d.join("out-home");
    let a = reconstruct(&["--rae", "org/name"], &img, &out);
    let env = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    ok_env(&strs(&a), &env, None);
    assert_eq!(pngs(&out), want);
}

#[test]
fn a_local_path_wins_over_a_hub_id() {
    let d = tmp("hub-local-wins");
    let (rae, img) = rae_and_image(&d);
    copy_dir(&rae, &d.join("org/name"));
    let empty = d.join("empty-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let env = [
        ("HF_HUB_CACHE", empty.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    for id in ["org/name", "./org/name"] {
        let out = d.join("out");
        let a = reconstruct(&["--rae", id], &img, &out);
        ok_env(&strs(&a), &env, Some(&d));
    }
    // hf:// forces the hub, which has nothing.
    let a = reconstruct(&["--rae", "hf://org/name"], &img, &d.join("o"));
    let o = run_env(&strs(&a), &env, Some(&d));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not in the Hugging Face cache"),
        "{err}"
    );
}

#[test]
fn missing_ids_name_id_revision_file_and_cache() {
    let d = tmp("hub-missing");
    let (rae, img) = rae_and_image(&d);
    let cache = d.join("cache");
    fake_cache(&cache, &rae);
    let repo_dir = cache.join("models--org--name");
    let offline = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let out = d.join("out");
    // An unknown revision: refs/v2 is missing.
    let a = reconstruct(&["--rae", "org/name@v2"], &img, &out);
    let e = fails_env(&strs(&a), &offline);
    for want in ["--rae", "org/name", "v2", "HF_HUB_OFFLINE", "refs"] {
        assert!(e.contains(want), "{want:?} in {e}");
    }
    assert!(e.contains(repo_dir.to_str().unwrap()), "{e}");
    // A missing file in a known snapshot.
    let a = reconstruct(
        &[
            "--rae",
            "org/name",
            "--decoder",
            "org/name/nope.safetensors",
        ],
        &img,
        &out,
    );
    let e = fails_env(&strs(&a), &offline);
    for want in ["--decoder", "nope.safetensors", "main", SHA] {
        assert!(e.contains(want), "{want:?} in {e}");
    }
    assert!(e.contains(repo_dir.to_str().unwrap()), "{e}");
    // Another repository, not cached at all.
    let a = reconstruct(&["--rae", "org/other"], &img, &out);
    let e = fails_env(&strs(&a), &offline);
    assert!(
        e.contains("org/other") && e.contains("models--org--other"),
        "{e}"
    );
    // Without the feature and without HF_HUB_OFFLINE the error says how to get it.
    #[cfg(not(feature = "hub"))]
    {
        let a = reconstruct(&["--rae", "org/other@v3"], &img, &out);
        let e = fails_env(&strs(&a), &[("HF_HUB_CACHE", cache.to_str().unwrap())]);
        assert!(e.contains("`hub` feature") && e.contains("v3"), "{e}");
    }
}

#[test]
fn hostile_ids_are_refused_without_a_panic() {
    let d = tmp("hub-hostile");
    let (rae, img) = rae_and_image(&d);
    let cache = d.join("cache");
    fake_cache(&cache, &rae);
    // A refs file that points outside the snapshots.
    std::fs::write(cache.join("models--org--name/refs/evil"), "../../../../etc").unwrap();
    let env = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let long = format!("org/{}", "n".repeat(5000));
    let deep = format!("org/name/{}", ["x"; 64].join("/"));
    let cases: Vec<(&str, &str)> = vec![
        ("--rae", "hf://../.."),
        ("--rae", "hf://org/name/../../../etc"),
        ("--rae", "org/name@../../x"),
        ("--rae", "org/name@"),
        ("--rae", "org//name"),
        ("--rae", "org/name@evil"),
        ("--rae", "org--x/name"),
        ("--rae", &long),
        ("--rae", &deep),
        ("--decoder", "org/name/../../../../etc/passwd"),
        ("--decoder", "org/name"),
        ("--stats", "org/name/a b.safetensors"),
    ];
    for (flag, id) in cases {
        let mut flags = vec!["--rae", rae.to_str().unwrap()];
        if flag == "--rae" {
            flags = vec![];
        }
        flags.extend([flag, id]);
        let a = reconstruct(&flags, &img, &d.join("out"));
        let e = fails_env(&strs(&a), &env);
        assert!(e.contains(flag), "{flag} {id}: {e}");
        assert!(e.len() < 4000, "{flag} {id}: an absurd message: {e}");
    }
    assert!(!d.join("etc").exists());
}

#[cfg(feature = "hub")]
mod download {
    use super::*;
    use server::{FakeRepo, Hub};
    use std::collections::BTreeMap;

    const HUB_SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn fake_repo(rae: &Path) -> FakeRepo {
        let mut files = Vec::new();
        files_of(rae, "", &mut files);
        let mut files: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        // What a folder id does not fetch: a README, a .pt twin of a .safetensors file.
        files.insert("README.md".into(), b"# a model card".to_vec());
        files.insert("decoder.pt".into(), vec![0; 64]);
        FakeRepo {
            id: "org/name".into(),
            sha: HUB_SHA.into(),
            revisions: vec!["main".into()],
            files,
        }
    }

    #[test]
    fn downloads_then_runs_offline_from_the_cache() {
        let d = tmp("hub-download");
        let (rae, img) = rae_and_image(&d);
        let base = d.join("base");
        let a = reconstruct(&["--rae", rae.to_str().unwrap()], &img, &base);
        ok_env(&strs(&a), &[], None);
        let want = pngs(&base);
        let hub = Hub::start(fake_repo(&rae));
        let cache = d.join("cache");
        let endpoint = hub.endpoint.clone();
        let env = [
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_ENDPOINT", endpoint.as_str()),
        ];
        let out = d.join("out1");
        let a = reconstruct(&["--rae", "org/name"], &img, &out);
        ok_env(&strs(&a), &env, None);
        assert_eq!(pngs(&out), want);
        let repo = cache.join("models--org--name");
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            HUB_SHA
        );
        let snap = repo.join("snapshots").join(HUB_SHA);
        assert!(snap.join("decoder.safetensors").exists());
        assert!(snap.join("encoder/config.json").exists());
        assert!(!snap.join("README.md").exists() && !snap.join("decoder.pt").exists());
        let seen = hub.requests();
        assert!(
            seen.iter()
                .any(|r| r.contains("/api/models/org/name/revision/main")),
            "{seen:?}"
        );
        assert!(seen.iter().any(|r| r.contains("/cdn/")), "{seen:?}");
        assert!(
            !seen
                .iter()
                .any(|r| r.contains("README") || r.contains("decoder.pt")),
            "{seen:?}"
        );
        // A file id inside the repository, by a file the folder run did not fetch.
        let a = reconstruct(
            &[
                "--rae",
                "org/name",
                "--decoder",
                "org/name@main/decoder.safetensors",
            ],
            &img,
            &d.join("out2"),
        );
        ok_env(&strs(&a), &env, None);
        // The hub gone: everything comes from the cache.
        hub.stop();
        for flags in [
            vec!["--rae", "org/name"],
            vec!["--rae", "org/name", "--stats", "org/name/stats.safetensors"],
        ] {
            let out = d.join("out3");
            let _ = std::fs::remove_dir_all(&out);
            let a = reconstruct(&flags, &img, &out);
            ok_env(&strs(&a), &env, None);
            assert_eq!(pngs(&out), want);
        }
    }

    #[test]
    fn hub_errors_are_named() {
        let d = tmp("hub-404");
        let (rae, img) = rae_and_image(&d);
        let hub = Hub::start(fake_repo(&rae));
        let cache = d.join("cache");
        let env = [
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_ENDPOINT", hub.endpoint.as_str()),
        ];
        let out = d.join("out");
        let a = reconstruct(
            &[
                "--rae",
                rae.to_str().unwrap(),
                "--decoder",
                "org/name/nope.safetensors",
            ],
            &img,
            &out,
        );
        let e = fails_env(&strs(&a), &env);
        for want in [
            "--decoder",
            "nope.safetensors",
            "org/name",
            "main",
            "404",
            "models--org--name",
        ] {
            assert!(e.contains(want), "{want:?} in {e}");
        }
        let a = reconstruct(&["--rae", "org/name@v9"], &img, &out);
        let e = fails_env(&strs(&a), &env);
        assert!(
            e.contains("v9") && e.contains("404") && e.contains("RevisionNotFound"),
            "{e}"
        );
        let a = reconstruct(&["--rae", "org/nothing"], &img, &out);
        let e = fails_env(&strs(&a), &env);
        assert!(e.contains("org/nothing") && e.contains("404"), "{e}");
        let a = reconstruct(&["--rae", "org/name/nothing-here"], &img, &out);
        let e = fails_env(&strs(&a), &env);
        assert!(e.contains("nothing-here"), "{e}");
        // HF_HUB_OFFLINE: not even asked.
        let before = hub.requests().len();
        let a = reconstruct(&["--rae", "org/name"], &img, &out);
        let mut off = env.to_vec();
        off.push(("HF_HUB_OFFLINE", "1"));
        let e = fails_env(&strs(&a), &off);
        assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
        assert_eq!(hub.requests().len(), before);
    }
}

/// The reference's YAML names its encoder by hub id (`dinov2_path: facebook/...`): read from
/// the cache like the flag, the same samples as with the local folder.
#[test]
fn a_yaml_encoder_hub_id_resolves_through_the_cache() {
    let d = tmp("hub-yaml");
    let b = CpuBackend::new();
    // Latents [8, 4, 4], the shape of the fixture DiT-DH.
    let rae = tiny_rae(&b, 8, 4, 4);
    let rae_dir = d.join("rae");
    write_rae_dir(&b, &rae, &rae_dir, true);
    let cache = d.join("cache");
    let repo = cache.join("models--org--enc");
    copy_dir(&rae_dir.join("encoder"), &repo.join("snapshots").join(SHA));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    let dit_json = std::fs::read_to_string(common::fixture("dit_config.json")).unwrap();
    let yaml = |enc: &str| {
        format!(
            "stage_1:\n  params:\n    encoder_config_path: '{enc}'\n    encoder_input_size: 16\n    encoder_params: {{'dinov2_path': '{enc}'}}\n    pretrained_decoder_path: '{dec}'\n    normalization_stat_path: '{stats}'\nstage_2:\n  params: {params}\n  ckpt: '{ckpt}'\nsampler:\n  mode: ODE\n  params:\n    sampling_method: 'euler'\n    num_steps: 3\nmisc:\n  latent_size: [8, 4, 4]\n  num_classes: 5\n  time_dist_shift_base: 64\n",
            dec = rae_dir.join("decoder.safetensors").display(),
            stats = rae_dir.join("stats.safetensors").display(),
            params = dit_json.replace('\n', " "),
            ckpt = common::fixture("dit.safetensors").display(),
        )
    };
    let mut latents = Vec::new();
    for (name, enc) in [
        ("local", rae_dir.join("encoder").display().to_string()),
        ("hub", "org/enc".into()),
    ] {
        let cfg = d.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml(&enc)).unwrap();
        let l = d.join(format!("{name}.safetensors"));
        let out = d.join(format!("out-{name}"));
        ok_env(
            &[
                "sample",
                "--config",
                cfg.to_str().unwrap(),
                "--classes",
                "0,4",
                "--num",
                "2",
                "--out",
                out.to_str().unwrap(),
                "--save-latents",
                l.to_str().unwrap(),
            ],
            &[("HF_HUB_CACHE", cache.to_str().unwrap())],
            None,
        );
        let f = rae_cli::store::load_tensor_file(&l).unwrap();
        latents.push(f.tensors.get("latents").unwrap().data.clone());
    }
    // The same samples (the metadata differs: it records where the encoder was read).
    assert_eq!(latents[0], latents[1]);
    // Not in the cache and offline: the key, the id and the way out are named.
    let cfg = d.join("missing.yaml");
    std::fs::write(&cfg, yaml("org/absent")).unwrap();
    let e = fails_env(
        &[
            "sample",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            d.join("o").to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    for want in [
        "stage_1.params.encoder_params.dinov2_path",
        "org/absent",
        "HuggingFace",
        "HF_HUB_OFFLINE",
        "--encoder",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
}
