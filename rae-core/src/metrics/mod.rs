//! Evaluation metrics (spec §6): streaming feature moments and the Fréchet distance behind
//! FID (§6.1, §6.2), with our own symmetric eigendecomposition for the matrix square root,
//! and the image metrics PSNR and SSIM used for reconstructions. All in f64, no_std.

pub mod frechet;
pub mod image;
pub mod moments;

pub use frechet::{frechet_distance, sqrtm_psd, sym_eigen, trace_sqrt_product, SymEigen};
pub use image::{psnr, ssim};
pub use moments::Moments;
