//! The threaded image loader (same batches as the sequential load, whatever the number of
//! workers; training identical with --workers 0 and 3) and class indices for ImageNet-style
//! folders (`n01440764/*.JPEG`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{ok, tmp};
use rae_cli::data::loader::{with_loader, Images};
use rae_cli::data::{load_batch, BatchOrder, ClassIndex, Dataset, ImageFolder};
use rae_cli::store::load_tensor_file;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An ImageNet-style folder: `n0000000K/img_J.JPEG` (upper-case extension), images of
/// assorted sizes.
fn imagenet_like(root: &Path, classes: usize, per: usize) {
    for c in 0..classes {
        let dir = root.join(format!("n{:08}", 1440764 + c));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..per {
            let (w, h) = (40 + 7 * j as u32, 30 + 5 * c as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 5 + c as u32 * 40) as u8, (y * 7) as u8, (j * 30) as u8])
            });
            img.save_with_format(dir.join(format!("img_{j}.JPEG")), image::ImageFormat::Jpeg)
                .unwrap();
        }
    }
}

#[test]
fn threaded_batches_equal_sequential_batches() {
    let d = tmp("loader-eq");
    imagenet_like(&d, 4, 5);
    let ds = ImageFolder::open(&d, 16).unwrap();
    assert_eq!(ds.len(), 20);
    let images = Images(&ds);
    let mut order = BatchOrder::new(3, ds.len(), true);
    let want: Vec<_> = (0..12u64)
        .map(|step| load_batch(&ds, &order.batch(step, 6)).unwrap())
        .collect();
    for workers in [0, 1, 2, 3, 8] {
        let mut order = BatchOrder::new(3, ds.len(), true);
        let plan = move |step| order.batch(step, 6);
        with_loader(&images, workers, 2, 12, plan, |loader| {
            for step in 0..12 {
                assert!(
                    loader.batch(step).unwrap() == want[step as usize],
                    "workers {workers}, step {step}"
                );
            }
            // A jump (as a resume makes) and back.
            assert!(loader.batch(9).unwrap() == want[9]);
            assert!(loader.batch(2).unwrap() == want[2]);
            assert!(loader.batch(3).unwrap() == want[3]);
        });
    }
}

#[test]
fn a_bad_image_fails_its_batch_with_the_file_named() {
    let d = tmp("loader-bad");
    imagenet_like(&d, 2, 3);
    let victim = d.join("n01440765").join("img_1.JPEG");
    std::fs::write(&victim, b"not a jpeg").unwrap();
    let ds = ImageFolder::open(&d, 16).unwrap();
    let images = Images(&ds);
    for workers in [0, 3] {
        let plan = |step: u64| vec![((step as usize) % 6, false)];
        with_loader(&images, workers, 2, 6, plan, |loader| {
            for step in 0..6 {
                let r = loader.batch(step);
                if step == 4 {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains("img_1.JPEG"), "{e}");
                } else {
                    r.unwrap();
                }
            }
        });
    }
}

#[test]
fn class_index_formats_and_missing_folders() {
    let d = tmp("class-index");
    let data = d.join("train");
    imagenet_like(&data, 3, 2);
    // Without an index: sorted folder names.
    let plain = ImageFolder::open(&data, 16).unwrap();
    assert_eq!(plain.classes()[0], "n01440764");
    assert_eq!(plain.len(), 6);
    // torchvision/Keras format, labels reversed and with a class that has no folder.
    let keras = d.join("imagenet_class_index.json");
    std::fs::write(
        &keras,
        r#"{"0": ["n01440767", "x"], "1": ["n01440766", "goldfish"], "2": ["n01440765", "shark"], "3": ["n01440764", "tench"]}"#,
    )
    .unwrap();
    let ds = ImageFolder::open_indexed(&data, 16, Some(&keras)).unwrap();
    assert_eq!(ds.classes().len(), 4);
    assert_eq!(ds.classes()[3], "n01440764");
    // Files stay in sorted folder order; labels come from the index.
    assert_eq!(ds.label(0), 3);
    assert_eq!(ds.label(2), 2);
    assert_eq!(ds.label(4), 1);
    // Plain map.
    let map = d.join("map.json");
    std::fs::write(&map, r#"{"n01440764": 0, "n01440765": 2, "n01440766": 1}"#).unwrap();
    let ds = ImageFolder::open_indexed(&data, 16, Some(&map)).unwrap();
    assert_eq!((ds.label(0), ds.label(2), ds.label(4)), (0, 2, 1));
    assert_eq!(ClassIndex::read(&map).unwrap().classes.len(), 3);
    // A folder not in the index is named.
    let short = d.join("short.json");
    std::fs::write(&short, r#"{"n01440764": 0, "n01440766": 1}"#).unwrap();
    let e = ImageFolder::open_indexed(&data, 16, Some(&short))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("n01440765") && e.contains("not in the class index"),
        "{e}"
    );
    // A broken index names its file.
    std::fs::write(&short, r#"{"n01440764": 0, "n01440766": 0}"#).unwrap();
    let e = ImageFolder::open_indexed(&data, 16, Some(&short))
        .unwrap_err()
        .to_string();
    assert!(e.contains("short.json"), "{e}");
}

fn checkpoint(path: &Path) -> Vec<(String, Vec<f32>)> {
    let f = load_tensor_file(path).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = f
        .tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.data.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn training_with_and_without_workers_is_identical() {
    let b = rae_core::CpuBackend::new();
    let d = tmp("loader-train");
    let rae = common::tiny_rae(&b, 8, 4, 4);
    common::write_rae_dir(&b, &rae, &d.join("rae"), true);
    let data = d.join("train");
    imagenet_like(&data, 3, 4);
    let index = d.join("index.json");
    std::fs::write(
        &index,
        r#"{"0": ["n01440764", "a"], "1": ["n01440765", "b"], "2": ["n01440766", "c"], "3": ["n09999999", "d"]}"#,
    )
    .unwrap();
    let mut ckpts = Vec::new();
    for workers in ["0", "3"] {
        let out = d.join(format!("out-{workers}"));
        ok(&[
            "train",
            "--stage",
            "2",
            "--rae",
            s(&d.join("rae")),
            "--data",
            s(&data),
            "--class-index",
            s(&index),
            "--out",
            s(&out),
            "--max-steps",
            "3",
            "--batch-size",
            "5",
            "--sample-steps",
            "2",
            "--workers",
            workers,
        ]);
        ckpts.push(checkpoint(&out.join("dit-train.safetensors")));
    }
    assert!(!ckpts[0].is_empty());
    assert!(ckpts[0] == ckpts[1], "--workers 0 and 3 differ");
}
