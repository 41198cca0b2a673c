//! Evaluation metrics (spec §6): streaming feature moments and the Fréchet distance behind
//! FID (§6.1, §6.2), with our own symmetric eigendecomposition for the matrix square root;
//! the generation metrics on Inception feature arrays (FID, sFID, Inception Score, KID,
//! improved precision and recall, §6.1) with numpy's legacy RNG where torch-fidelity draws
//! from it; and the image metrics PSNR and SSIM used for reconstructions. All in f64, no_std.

pub mod frechet;
pub mod image;
pub mod inception;
pub mod kid;
pub mod manifold;
pub mod moments;
pub mod mt19937;

pub use frechet::{frechet_distance, sqrtm_psd, sym_eigen, trace_sqrt_product, SymEigen};
pub use image::{psnr, ssim};
pub use inception::{
    fid_from_features, inception_score, GaussianStats, InceptionScore, TORCH_FIDELITY_SEED,
};
pub use kid::{kid, mmd2_unbiased_poly, Kid, KidOptions};
pub use manifold::{
    manifold_radii, precision_recall, precision_recall_with_radii, PrecisionRecall, ADM_NEIGHBOURS,
};
pub use moments::Moments;
pub use mt19937::NumpyRandomState;
