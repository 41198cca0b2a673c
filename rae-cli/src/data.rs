//! Training data: an image folder with one subfolder per class (§5.2: ADM centre crop,
//! random horizontal flip) and the built-in procedural dataset of coloured shapes, plus a
//! deterministic batch order that depends only on the seed and the step (so a resumed run
//! sees exactly the batches an uninterrupted one would).

use std::path::{Path, PathBuf};

use rae_core::rng::{PhiloxKey, PhiloxStream};

use crate::errors::{io_error, CliError, CliResult};
use crate::image_io::{is_image, load_chw};

pub mod class_index;
pub mod loader;

pub use class_index::ClassIndex;

/// A labelled image dataset producing `[3, S, S]` images in `[0, 1]`.
/// Seed of the built-in dataset (every run and command draws the same images).
pub const BUILTIN_DATA_SEED: u64 = 7;

pub trait Dataset: Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, index = label.
    fn classes(&self) -> &[String];
    /// Image side `S`.
    fn image_size(&self) -> usize;
    /// Label of image `i`.
    fn label(&self, i: usize) -> u32;
    /// Image `i`, flipped horizontally when `flip`.
    fn image(&self, i: usize, flip: bool) -> CliResult<Vec<f32>>;
}

/// The built-in dataset: ten classes of coloured shapes on a dark background, each a
/// unique (shape, colour) pair, with jittered position, size and background, generated
/// deterministically from the seed and the index.
#[derive(Debug, Clone)]
pub struct Shapes {
    size: usize,
    len: usize,
    seed: u64,
    classes: Vec<String>,
}

/// Names of the built-in classes.
pub const SHAPE_CLASSES: [&str; 10] = [
    "red-disk",
    "green-square",
    "blue-triangle",
    "yellow-plus",
    "magenta-ring",
    "cyan-diamond",
    "orange-hbar",
    "white-cross",
    "purple-vbar",
    "pink-two-dots",
];

/// Colour of each built-in class.
pub const SHAPE_COLORS: [[f32; 3]; 10] = [
    [0.90, 0.15, 0.15],
    [0.15, 0.80, 0.20],
    [0.20, 0.35, 0.95],
    [0.95, 0.90, 0.15],
    [0.90, 0.20, 0.85],
    [0.15, 0.85, 0.90],
    [1.00, 0.55, 0.10],
    [0.95, 0.95, 0.95],
    [0.55, 0.25, 0.80],
    [1.00, 0.60, 0.75],
];

impl Shapes {
    /// `len` images of side `size` (at least 16) from `seed`.
    pub fn new(size: usize, len: usize, seed: u64) -> Self {
        Shapes {
            size: size.max(16),
            len,
            seed,
            classes: SHAPE_CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Whether point `(u, v)` (in units of the shape radius around its centre) is inside the
    /// shape of class `c`.
    fn inside(c: u32, u: f32, v: f32) -> bool {
        let (au, av) = (u.abs(), v.abs());
        match c {
            0 => u * u + v * v <= 1.0,
            1 => au <= 0.8 && av <= 0.8,
            2 => v <= 0.8 && v >= -0.9 + 1.7 * au / 0.95 && au <= 0.95,
            3 => (au <= 0.28 && av <= 1.0) || (av <= 0.28 && au <= 1.0),
            4 => {
                let r2 = u * u + v * v;
                (0.45..=1.0).contains(&r2)
            }
            5 => au + av <= 1.0,
            6 => au <= 1.0 && av <= 0.35,
            7 => ((u - v).abs() <= 0.35 || (u + v).abs() <= 0.35) && au <= 0.9 && av <= 0.9,
            8 => au <= 0.35 && av <= 1.0,
            _ => {
                let d1 = (u + 0.5).powi(2) + v * v;
                let d2 = (u - 0.5).powi(2) + v * v;
                d1 <= 0.16 || d2 <= 0.16
            }
        }
    }
}

impl Dataset for Shapes {
    fn len(&self) -> usize {
        self.len
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn image_size(&self) -> usize {
        self.size
    }
    fn label(&self, i: usize) -> u32 {
        (i % 10) as u32
    }
    fn image(&self, i: usize, flip: bool) -> CliResult<Vec<f32>> {
        let s = self.size;
        let c = self.label(i);
        let mut rng = PhiloxStream::new(self.seed, 0x5A9E_0000 + i as u64);
        let sf = s as f32;
        let radius = sf * (0.22 + 0.08 * rng.uniform());
        let cx = sf * 0.5 + (rng.uniform() - 0.5) * sf * 0.25;
        let cy = sf * 0.5 + (rng.uniform() - 0.5) * sf * 0.25;
        let bg = [
            0.05 + 0.15 * rng.uniform(),
            0.05 + 0.15 * rng.uniform(),
            0.05 + 0.15 * rng.uniform(),
        ];
        let tilt = (rng.uniform() - 0.5) * 0.1;
        let color = SHAPE_COLORS[c as usize];
        let shade = 0.85 + 0.15 * rng.uniform();
        let mut out = vec![0.0f32; 3 * s * s];
        for y in 0..s {
            for x in 0..s {
                // 2×2 supersampling for smooth edges.
                let mut cover = 0.0f32;
                for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let u = (x as f32 + dx - cx) / radius;
                    let v = (y as f32 + dy - cy) / radius;
                    if Self::inside(c, u + tilt * v, v) {
                        cover += 0.25;
                    }
                }
                let grad = 1.0 + 0.3 * (y as f32 / sf - 0.5);
                let xx = if flip { s - 1 - x } else { x };
                for ch in 0..3 {
                    let v = bg[ch] * grad * (1.0 - cover) + color[ch] * shade * cover;
                    // Quantise like an 8-bit image.
                    out[(ch * s + y) * s + xx] = ((v.clamp(0.0, 1.0) * 255.0).round()) / 255.0;
                }
            }
        }
        Ok(out)
    }
}

/// An image folder: `root/<class>/<image>.{png,jpg,jpeg}`, classes in sorted folder order
/// (ImageFolder convention, §5.2), each image ADM-centre-cropped to `size`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    files: Vec<(PathBuf, u32)>,
    classes: Vec<String>,
    size: usize,
}

impl ImageFolder {
    /// Scans `root`. A missing folder, a folder without class subfolders or without any
    /// image is an error naming the folder.
    pub fn open(root: &Path, size: usize) -> CliResult<Self> {
        Self::open_with(root, size, None)
    }

    /// [`ImageFolder::open_with`] the class index in the file `index` (`--class-index`),
    /// when given.
    pub fn open_indexed(root: &Path, size: usize, index: Option<&Path>) -> CliResult<Self> {
        let ix = index.map(ClassIndex::read).transpose()?;
        Self::open_with(root, size, ix.as_ref())
    }

    /// [`ImageFolder::open`] with the labels of a class index (`--class-index`): every
    /// class folder must be in the index (an error names those that are not), and the
    /// classes are the index's, all of them, even those without a folder here. Images are
    /// listed in sorted folder order either way (as torchvision's `ImageFolder` does).
    pub fn open_with(root: &Path, size: usize, index: Option<&ClassIndex>) -> CliResult<Self> {
        crate::image_io::check_image_size(size)?;
        let entries = std::fs::read_dir(root)
            .map_err(|e| io_error("cannot open the data folder", root, &e))?;
        let mut class_dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(CliError::new(format!(
                "the data folder {} has no class subfolders: expected {}/<class>/<image>.png (one subfolder per class)",
                root.display(),
                root.display()
            )));
        }
        let mut files = Vec::new();
        let mut classes = Vec::new();
        let folder_name = |d: &PathBuf| {
            d.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let labels: Vec<u32> = match index {
            None => (0..class_dirs.len() as u32).collect(),
            Some(ix) => {
                let names: Vec<String> = class_dirs.iter().map(folder_name).collect();
                let missing: Vec<&str> = names
                    .iter()
                    .filter(|n| ix.label(n).is_none())
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    let shown = missing
                        .iter()
                        .take(10)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(CliError::new(format!(
                        "{} class folder(s) of {} are not in the class index: {shown}{}",
                        missing.len(),
                        root.display(),
                        if missing.len() > 10 { ", ..." } else { "" }
                    )));
                }
                names.iter().filter_map(|n| ix.label(n)).collect()
            }
        };
        for (&label, dir) in labels.iter().zip(&class_dirs) {
            let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| io_error("cannot open the class folder", dir, &e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            imgs.sort();
            files.extend(imgs.into_iter().map(|p| (p, label)));
            classes.push(folder_name(dir));
        }
        if let Some(ix) = index {
            classes = ix.classes.iter().map(|(n, _)| n.clone()).collect();
        }
        if files.is_empty() {
            return Err(CliError::new(format!(
                "the data folder {} has class subfolders but no PNG or JPEG images in them",
                root.display()
            )));
        }
        Ok(ImageFolder {
            files,
            classes,
            size,
        })
    }

    /// The image files, in dataset order.
    pub fn paths(&self) -> impl ExactSizeIterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn image_size(&self) -> usize {
        self.size
    }
    fn label(&self, i: usize) -> u32 {
        self.files[i].1
    }
    fn image(&self, i: usize, flip: bool) -> CliResult<Vec<f32>> {
        load_chw(&self.files[i].0, self.size, flip)
    }
}

/// Deterministic batch order: epoch `e` is a Fisher–Yates permutation drawn from Philox
/// stream `(seed, DATA + e)`; the flip of the `k`-th sample overall is a uniform of stream
/// `(seed, DATA_FLIP)` at position `k`. Everything is a function of the step, so resuming
/// at step `s` reproduces the batches exactly.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    seed: u64,
    n: usize,
    flip: bool,
    cached: Option<(u64, Vec<usize>)>,
}

impl BatchOrder {
    /// Order over `n` items; `flip` enables random horizontal flips.
    pub fn new(seed: u64, n: usize, flip: bool) -> Self {
        BatchOrder {
            seed,
            n,
            flip,
            cached: None,
        }
    }

    fn permutation(&mut self, epoch: u64) -> &[usize] {
        if self.cached.as_ref().map(|c| c.0) != Some(epoch) {
            let mut p: Vec<usize> = (0..self.n).collect();
            let mut rng = PhiloxStream::new(self.seed, rae_core::train::streams::DATA + 1 + epoch);
            for i in (1..p.len()).rev() {
                let j = ((rng.uniform() as f64) * (i + 1) as f64) as usize;
                p.swap(i, j.min(i));
            }
            self.cached = Some((epoch, p));
        }
        self.cached.as_ref().map_or(&[], |c| &c.1)
    }

    /// `(index, flip)` of the items of batch `step` of size `bs`.
    pub fn batch(&mut self, step: u64, bs: usize) -> Vec<(usize, bool)> {
        let n = self.n.max(1) as u64;
        let mut out = Vec::with_capacity(bs);
        for j in 0..bs as u64 {
            let k = step * bs as u64 + j;
            let (epoch, pos) = (k / n, (k % n) as usize);
            let idx = self.permutation(epoch).get(pos).copied().unwrap_or(0);
            let flip = self.flip && {
                let mut u = [0.0f32];
                rae_core::rng::fill_uniform(
                    &mut u,
                    PhiloxKey::new(self.seed, rae_core::train::streams::DATA),
                    k,
                );
                u[0] < 0.5
            };
            out.push((idx, flip));
        }
        out
    }
}

/// Loads a batch: images `[B·3·S·S]` and labels.
pub fn load_batch(ds: &dyn Dataset, items: &[(usize, bool)]) -> CliResult<(Vec<f32>, Vec<u32>)> {
    let s = ds.image_size();
    let mut images = Vec::with_capacity(items.len() * 3 * s * s);
    let mut labels = Vec::with_capacity(items.len());
    for &(i, flip) in items {
        images.extend(ds.image(i, flip)?);
        labels.push(ds.label(i));
    }
    Ok((images, labels))
}

/// Checks images `[3, S, S]` of the built-in classes against their labels in two
/// independent ways and returns the two accuracies:
/// 1. the mean colour of the foreground (pixels whose brightest channel exceeds 0.35; the
///    background never does) is nearest to the label's class colour;
/// 2. the nearest of 50 training images per class (L2 in pixel space, both flips) has the
///    label's class, which also checks the shape.
pub fn builtin_class_accuracy(
    images: &[Vec<f32>],
    labels: &[u32],
    size: usize,
) -> CliResult<(f64, f64)> {
    let ds = Shapes::new(size, 500, BUILTIN_DATA_SEED);
    let mut refs = Vec::with_capacity(1000);
    for i in 0..ds.len() {
        for flip in [false, true] {
            refs.push((ds.image(i, flip)?, ds.label(i)));
        }
    }
    let hw = size * size;
    let (mut colour_ok, mut nn_ok) = (0usize, 0usize);
    for (img, &l) in images.iter().zip(labels) {
        let mut sum = [0.0f32; 3];
        let mut n = 0usize;
        for p in 0..hw {
            let px = [img[p], img[hw + p], img[2 * hw + p]];
            if px.iter().cloned().fold(0.0, f32::max) > 0.35 {
                for c in 0..3 {
                    sum[c] += px[c];
                }
                n += 1;
            }
        }
        if n > 0 {
            let mean = sum.map(|v| v / n as f32);
            let nearest = (0..SHAPE_COLORS.len())
                .min_by(|&a, &b| {
                    let d = |k: usize| {
                        SHAPE_COLORS[k]
                            .iter()
                            .zip(&mean)
                            .map(|(c, m)| (c - m).powi(2))
                            .sum::<f32>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap_or(0);
            if nearest == l as usize {
                colour_ok += 1;
            }
        }
        // Each reference's distance once (the first of equal minima wins, as with min_by).
        let nn = refs
            .iter()
            .map(|(r, rl)| {
                let d: f32 = r.iter().zip(img).map(|(x, y)| (x - y).powi(2)).sum();
                (d, *rl)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(u32::MAX, |r| r.1);
        if nn == l {
            nn_ok += 1;
        }
    }
    let n = images.len().max(1) as f64;
    Ok((colour_ok as f64 / n, nn_ok as f64 / n))
}
