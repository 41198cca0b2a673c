//! The ADM centre crop against Pillow, byte for byte: `tests/fixtures/pil_crop.safetensors`
//! (Pillow 7 to 12) and `pil_crop_pillow13.safetensors` (Pillow 13, another pass order), both
//! written by `tools/make_pil_fixtures.py`, hold guided-diffusion's `center_crop_arr` run with
//! Pillow on generated RGB images of many sizes; the inputs are regenerated here bit for bit
//! (checked by their hashes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use image::RgbImage;
use proptest::prelude::*;
use rae_cli::image_io::{
    adm_center_crop, adm_center_crop_with, check_dims, pil_resize, PilFilter, PilPassOrder,
};
use rae_core::safetensors::SafeTensors;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const PALETTE: [[i64; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [0, 255, 255],
    [255, 0, 255],
];

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of `tools/make_pil_fixtures.py`.
fn generate(kind: &str, w: u32, h: u32, seed: u64, param: i64) -> RgbImage {
    let (wi, hi) = (w as i64, h as i64);
    RgbImage::from_fn(w, h, |x, y| {
        let px = [0i64, 1, 2].map(|c| {
            let key = (seed << 44) | ((y as u64) << 22) | ((x as u64) << 2) | c as u64;
            let nb = (mix(key.wrapping_mul(GOLDEN)) >> 56) as i64;
            let (x, y) = (x as i64, y as i64);
            match kind {
                "noise" => nb,
                "checker" => {
                    let (cx, cy) = (x / param, y / param);
                    if (cx + cy) % 2 == 0 {
                        PALETTE[((cx + 3 * cy) % 6) as usize][c as usize]
                    } else if cy % 2 == 0 {
                        0
                    } else {
                        255
                    }
                }
                "edges" => {
                    let r = wi.min(hi) * param / 8;
                    let (dx, dy) = (2 * x + 1 - wi, 2 * y + 1 - hi);
                    match c {
                        0 => 255 * i64::from((x + 2 * y) % 37 < 18),
                        1 => 255 * i64::from(dx * dx + dy * dy <= r * r),
                        _ => x * 255 / (wi - 1).max(1),
                    }
                }
                "photo" => {
                    let mut base = [
                        30 + 200 * x / wi,
                        40 + 180 * y / hi,
                        80 + 97 * (x + y) / (wi + hi),
                    ][c as usize];
                    if x < wi / 8 {
                        base = [4, 2, 0][c as usize];
                    }
                    if wi / 4 <= x && x < 3 * wi / 4 && hi / 3 <= y && y < 2 * hi / 3 {
                        base = [250, 240, 20][c as usize];
                    }
                    (base + nb % 17 - 8).clamp(0, 255)
                }
                "lines" => {
                    if (7 * x + 13 * y) % 29 == 0 {
                        255 * i64::from(c == 0)
                    } else if x % 5 == 0 || y % 7 == 0 {
                        0
                    } else {
                        255
                    }
                }
                other => panic!("unknown kind {other}"),
            }
        });
        image::Rgb(px.map(|v| v as u8))
    })
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    format!("{h:016x}")
}

fn dims(v: &str) -> (u32, u32) {
    let (w, h) = v.split_once('x').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

/// Pixels (of 3 bytes) that differ, and the largest byte difference.
fn diff(ours: &RgbImage, want: &[u8]) -> (usize, u8) {
    assert_eq!(ours.as_raw().len(), want.len());
    let mut n = 0;
    let mut max = 0;
    for (a, b) in ours.as_raw().chunks(3).zip(want.chunks(3)) {
        if a != b {
            n += 1;
        }
        for (x, y) in a.iter().zip(b) {
            max = max.max(x.abs_diff(*y));
        }
    }
    (n, max)
}

/// Counts of one fixture's comparison.
#[derive(Default)]
struct Tally {
    cases: usize,
    compared: usize,
    differing: usize,
    hashed: usize,
    inter_compared: usize,
    inter_differing: usize,
    failures: Vec<String>,
}

/// Compares every case of a fixture file; returns its Pillow version and the counts.
fn check_fixture(file: &str) -> (String, PilPassOrder, Tally) {
    let path = format!("{FIXTURES}/{file}");
    let bytes = std::fs::read(&path).expect("read the fixture");
    let st = SafeTensors::parse(&bytes, &path).unwrap();
    let pillow = st.metadata_value("pillow_version").unwrap().to_string();
    let order = match st.metadata_value("pass_order").unwrap() {
        "classic" => PilPassOrder::Classic,
        "pillow13" => PilPassOrder::Pillow13,
        other => panic!("{file}: unknown pass order {other}"),
    };
    let mut t = Tally::default();
    for line in st.metadata_value("cases").unwrap().lines() {
        let f: HashMap<&str, &str> = line
            .split_whitespace()
            .map(|kv| kv.split_once('=').unwrap())
            .collect();
        let id = f["id"];
        let num = |k: &str| f[k].parse::<i64>().unwrap();
        let (w, h, s) = (num("w") as u32, num("h") as u32, num("s") as u32);
        let input = generate(f["kind"], w, h, num("seed") as u64, num("param"));
        assert_eq!(
            fnv1a64(input.as_raw()),
            f["input_fnv"],
            "{id}: generated input"
        );
        t.cases += 1;

        let out = adm_center_crop_with(&input, s, order).unwrap();
        assert_eq!(out.dimensions(), (s, s), "{id}");
        if order == PilPassOrder::Classic {
            assert_eq!(
                adm_center_crop(&input, s).unwrap(),
                out,
                "{id}: the default"
            );
        }
        if let Some(v) = st.get(&format!("{id}.out")) {
            assert_eq!(v.shape, [s as usize, s as usize, 3], "{id}");
            let (n, max) = diff(&out, v.data);
            t.compared += (s * s) as usize;
            t.differing += n;
            if n > 0 {
                t.failures
                    .push(format!("{file} {id}: {n} pixels differ, by up to {max}"));
            }
        } else {
            t.hashed += 1;
        }
        if fnv1a64(out.as_raw()) != f["out_fnv"] {
            t.failures.push(format!(
                "{file} {id}: the crop's hash differs from Pillow's"
            ));
        }

        // The intermediates, where stored: after the halvings, and the resize before the crop.
        let mut cur = input.clone();
        for _ in 0..num("halvings") {
            let (w, h) = (cur.width() / 2, cur.height() / 2);
            cur = pil_resize(&cur, w, h, PilFilter::Box, order);
        }
        assert_eq!(cur.dimensions(), dims(f["halved"]), "{id}: halved size");
        let (rw, rh) = dims(f["resized"]);
        let resized = pil_resize(&cur, rw, rh, PilFilter::Bicubic, order);
        for (name, ours) in [("halved", &cur), ("resized", &resized)] {
            if let Some(v) = st.get(&format!("{id}.{name}")) {
                let (hh, ww) = (ours.height() as usize, ours.width() as usize);
                assert_eq!(v.shape, [hh, ww, 3], "{id}.{name}");
                let (n, max) = diff(ours, v.data);
                t.inter_compared += hh * ww;
                t.inter_differing += n;
                if n > 0 {
                    t.failures.push(format!(
                        "{file} {id}.{name}: {n} pixels differ, by up to {max}"
                    ));
                }
            }
        }
    }
    (pillow, order, t)
}

#[test]
fn adm_center_crop_matches_pillow_byte_for_byte() {
    let mut failures = Vec::new();
    for (file, min_cases, min_pixels) in [
        ("pil_crop.safetensors", 50, 100_000),
        ("pil_crop_pillow13.safetensors", 50, 1_000),
    ] {
        let (pillow, order, t) = check_fixture(file);
        eprintln!(
            "Pillow {pillow} ({order:?} pass order), {file}: {} crops; pixels differing: {} of \
             {} (and {} crops checked by hash alone); intermediates: {} of {} pixels differing",
            t.cases, t.differing, t.compared, t.hashed, t.inter_differing, t.inter_compared
        );
        assert!(t.cases >= min_cases && t.compared >= min_pixels, "{file}");
        failures.extend(t.failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pil_resize_keeps_constant_images_and_sizes() {
    // A constant image stays constant through every filter and scale (weights sum to 1).
    let img = RgbImage::from_pixel(13, 7, image::Rgb([200, 3, 128]));
    for (w, h) in [(1, 1), (6, 3), (13, 20), (40, 7), (27, 15)] {
        for f in [PilFilter::Box, PilFilter::Bicubic] {
            let out = pil_resize(&img, w, h, f, PilPassOrder::Pillow13);
            assert_eq!(out.dimensions(), (w, h));
            assert!(
                out.pixels().all(|p| p.0 == [200, 3, 128]),
                "{f:?} to {w}×{h}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any size and crop side either crops to `s × s` or is refused as `check_dims` refuses
    /// it; nothing panics.
    #[test]
    fn random_sizes_crop_or_refuse(w in 1u32..400, h in 1u32..400, s in 1u32..80, seed in 0u64..1000) {
        let img = generate("noise", w, h, seed, 0);
        match adm_center_crop(&img, s) {
            Ok(out) => prop_assert_eq!(out.dimensions(), (s, s)),
            Err(_) => prop_assert!(check_dims("x", w, h).is_err()),
        }
        let (w2, h2) = ((seed as u32 % 97) + 1, (s * 3) % 91 + 1);
        for f in [PilFilter::Box, PilFilter::Bicubic] {
            for o in [PilPassOrder::Classic, PilPassOrder::Pillow13] {
                prop_assert_eq!(pil_resize(&img, w2, h2, f, o).dimensions(), (w2, h2));
            }
        }
    }
}
