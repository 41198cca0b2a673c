//! [`Features`] backed by our FID Inception-v3 (`rae_core::models::InceptionV3`) on any
//! backend: ADM's HWC uint8 batches are made NCHW on the host, then resized and run.

use std::path::Path;

use rae_core::models::InceptionV3;
use rae_core::Backend;

use super::inception::{Features, InceptionOut};
use crate::errors::{CliError, CliResult};
use crate::store::load_inception;

/// The network and the backend it runs on.
#[derive(Debug)]
pub struct InceptionFeatures<B: Backend> {
    b: B,
    net: InceptionV3<B>,
}

impl<B: Backend> InceptionFeatures<B> {
    /// Loads the weights file (`.pth` state dict or safetensors) onto `b`.
    pub fn load(b: B, path: &Path) -> CliResult<Self> {
        let net = load_inception(&b, path)?;
        Ok(InceptionFeatures { b, net })
    }
}

impl<B: Backend> Features for InceptionFeatures<B> {
    fn extract(&mut self, images: &[u8], n: usize, h: usize, w: usize) -> CliResult<InceptionOut> {
        if images.len() != n * h * w * 3 {
            return Err(CliError::new(format!(
                "{} bytes for {n} RGB images of {h}×{w}",
                images.len()
            )));
        }
        let mut chw = vec![0u8; images.len()];
        for i in 0..n {
            let src = &images[i * h * w * 3..(i + 1) * h * w * 3];
            let dst = &mut chw[i * h * w * 3..(i + 1) * h * w * 3];
            for (p, px) in src.chunks_exact(3).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    dst[c * h * w + p] = v;
                }
            }
        }
        let out = self.net.extract_u8(&self.b, &chw, n, (h, w))?;
        Ok(InceptionOut {
            pool: self.b.download(&out.pool)?,
            logits: self.b.download(&out.logits)?,
            spatial: self.b.download(&out.spatial)?,
        })
    }
}
