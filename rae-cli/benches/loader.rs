//! Speed of the image loader alone (JPEG decode + ADM centre crop to 256, no model): writes
//! a few hundred ImageNet-sized JPEGs (500×375 and similar) to a temporary folder and
//! reports images/s with 1 worker and with every core.
//!
//! `cargo bench -p rae-cli --no-default-features --bench loader`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rae_cli::data::loader::{default_workers, with_loader, Images};
use rae_cli::data::{Dataset, ImageFolder};

const IMAGES: usize = 320;
const BATCH: usize = 32;
const SIZES: [(u32, u32); 4] = [(500, 375), (375, 500), (500, 333), (640, 480)];

fn main() {
    let root = std::env::temp_dir().join(format!("rae-bench-loader-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for i in 0..IMAGES {
        let dir = root.join(format!("n{:08}", 1440764 + i % 8));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, h) = SIZES[i % SIZES.len()];
        // Smooth gradients plus texture, so the JPEGs are of a realistic size.
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let t = ((x * 31 + y * 17 + i as u32 * 13) % 97) as u8;
            image::Rgb([
                (x * 255 / w) as u8 ^ t,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8 / 2 + t,
            ])
        });
        img.save_with_format(
            dir.join(format!("img_{i:05}.JPEG")),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    }
    let ds = ImageFolder::open(&root, 256).unwrap();
    let images = Images(&ds);
    let steps = ds.len().div_ceil(BATCH) as u64;
    let n = ds.len();
    println!("loader: {n} JPEGs (500×375 etc.) -> 256×256 ADM centre crop, batches of {BATCH}");
    let mut workers = vec![0, 1, default_workers()];
    workers.dedup();
    for w in workers {
        let plan = |step: u64| {
            let first = step as usize * BATCH;
            (first..(first + BATCH).min(n))
                .map(|i| (i, i % 2 == 1))
                .collect()
        };
        let t = Instant::now();
        let mut got = 0;
        with_loader(&images, w, 2, steps, plan, |loader| {
            for step in 0..steps {
                got += loader.batch(step).unwrap().1.len();
            }
        });
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  --workers {w:>3}: {:8.1} images/s ({got} in {secs:.2} s)",
            got as f64 / secs
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
