//! The device side of a [`CubeBackend`], below the kernels: the backend's state and
//! settings ([`MatmulKernel`], [`AttentionKernel`]), its storage ([`CubeStorage`]) and the
//! helpers every kernel family uses (client, allocation, tensors, errors). The
//! `rae_core::Backend` implementation (`backend.rs`) sits above the kernels and calls them.

use std::fmt;
use std::sync::Arc;

use cubecl::prelude::*;
use cubecl::server::Handle;
use rae_core::{Error, Precision, Result, Shape, Tensor};

/// Device memory of a [`CubeBackend`] tensor: a CubeCL buffer handle and the number of
/// f32 values it holds. Cloning shares the buffer; ops never write into a buffer they did
/// not just allocate, so a clone is a stable snapshot.
#[derive(Clone, Debug)]
pub struct CubeStorage {
    pub(crate) handle: Handle,
    pub(crate) len: usize,
}

impl CubeStorage {
    /// The CubeCL buffer handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Number of f32 values in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Smallest buffer, in floats: one `vec4`, the widest load of any kernel.
pub(crate) const MIN_FLOATS: usize = 4;

/// How the backend's `matmul` multiplies (all in f32 unless stated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// cubek's unit-tiled f32 kernel, falling back to [`MatmulKernel::Tiled`] for a problem
    /// cubek declines.
    #[default]
    Cubek,
    /// cubek's tensor-core kernel where the device has one (it may round the inputs to
    /// tf32), else as [`MatmulKernel::Cubek`]. Opt-in: results differ from f32.
    CubekCmma,
    /// Our shared-memory tiled kernel only (portable, every shape).
    Tiled,
}

/// `rae_core::Backend` on a CubeCL runtime `R` (WGPU, CUDA, ...). Every op is a CubeCL
/// kernel written once in [`crate::kernels`]; the trait implementation is in `backend.rs`.
pub struct CubeBackend<R: Runtime> {
    pub(crate) client: ComputeClient<R>,
    pub(crate) name: Arc<str>,
    max_vector: usize,
    matmul: MatmulKernel,
    attention: AttentionKernel,
    pub(crate) precision: Precision,
    /// Whether matrix products in `precision` run on tensor cores (else operands are
    /// rounded by a kernel and multiplied in f32, emulating them).
    pub(crate) tensor_core_matmul: bool,
    /// Bound where a kernel's optional input is absent (never read, never written).
    placeholder: CubeStorage,
    /// The largest buffer the device can bind, when it has such a limit (WGPU's
    /// `max_storage_buffer_binding_size`): a larger allocation is an error naming its
    /// size, not a failure inside the runtime.
    pub(crate) max_alloc: Option<u64>,
}

impl<R: Runtime> Clone for CubeBackend<R> {
    fn clone(&self) -> Self {
        CubeBackend {
            client: self.client.clone(),
            name: self.name.clone(),
            max_vector: self.max_vector,
            matmul: self.matmul,
            attention: self.attention,
            precision: self.precision,
            tensor_core_matmul: self.tensor_core_matmul,
            placeholder: self.placeholder.clone(),
            max_alloc: self.max_alloc,
        }
    }
}

impl<R: Runtime> fmt::Debug for CubeBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CubeBackend")
            .field("name", &self.name)
            .field("max_vector", &self.max_vector)
            .field("matmul", &self.matmul)
            .field("attention", &self.attention)
            .field("precision", &self.precision)
            .finish()
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// A backend on an existing client; `name` is what [`Backend::name`](rae_core::Backend::name) reports (for
    /// example `"wgpu: llvmpipe"`). Attention is fused unless `RAE_ATTENTION=composite`
    /// (see [`AttentionKernel::from_env`]).
    pub fn new(client: ComputeClient<R>, name: impl Into<String>) -> Self {
        let max_vector = client
            .io_optimized_vector_sizes(core::mem::size_of::<f32>())
            .max()
            .unwrap_or(1)
            .clamp(1, 4);
        let placeholder = CubeStorage {
            handle: client.empty(MIN_FLOATS * core::mem::size_of::<f32>()),
            len: MIN_FLOATS,
        };
        CubeBackend {
            client,
            name: Arc::from(name.into()),
            max_vector,
            matmul: MatmulKernel::default(),
            attention: AttentionKernel::from_env(),
            precision: Precision::Fp32,
            tensor_core_matmul: false,
            placeholder,
            max_alloc: None,
        }
    }

    /// The same backend refusing buffers larger than `bytes` (the device's binding limit).
    pub fn with_max_alloc(mut self, bytes: u64) -> Self {
        self.max_alloc = Some(bytes);
        self
    }

    /// `Ok` when a buffer of `bytes` fits the device's binding limit.
    pub(crate) fn check_alloc(&self, bytes: usize) -> Result<()> {
        match self.max_alloc {
            Some(max) if bytes as u64 > max => Err(self.err(format!(
                "a buffer of {bytes} bytes ({} floats) exceeds the largest this device can bind ({max} bytes); use a smaller batch or image size",
                bytes / core::mem::size_of::<f32>()
            ))),
            _ => Ok(()),
        }
    }

    /// The same backend with another matmul kernel.
    pub fn with_matmul(mut self, kernel: MatmulKernel) -> Self {
        self.matmul = kernel;
        self
    }

    /// The matmul kernel in use.
    pub fn matmul_kernel(&self) -> MatmulKernel {
        self.matmul
    }

    /// The same backend with another attention path.
    pub fn with_attention(mut self, kernel: AttentionKernel) -> Self {
        self.attention = kernel;
        self
    }

    /// The attention path in use.
    pub fn attention_kernel(&self) -> AttentionKernel {
        self.attention
    }

    /// The CubeCL client.
    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// Widest float vector the kernels load (1, 2 or 4).
    pub(crate) fn max_vector(&self) -> usize {
        self.max_vector
    }

    /// An error of this backend.
    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::backend(self.name.to_string(), reason)
    }

    /// A new, uninitialised buffer of `n` floats. At least [`MIN_FLOATS`] are reserved so
    /// that every binding, even of an empty tensor read as `vec4`, is valid.
    pub(crate) fn alloc(&self, n: usize) -> Result<CubeStorage> {
        let bytes = n
            .max(MIN_FLOATS)
            .checked_mul(core::mem::size_of::<f32>())
            .ok_or_else(|| self.err(format!("a buffer of {n} floats is too large")))?;
        self.check_alloc(bytes)?;
        Ok(CubeStorage {
            handle: self.client.empty(bytes),
            len: n,
        })
    }

    /// `s`, or for an absent optional kernel input the backend's placeholder buffer (one
    /// `vec4`, allocated once; kernels only read an optional input that is present).
    pub(crate) fn or_placeholder<'a>(&'a self, s: Option<&'a CubeStorage>) -> &'a CubeStorage {
        s.unwrap_or(&self.placeholder)
    }

    /// A buffer holding `data`, as u32 values (kernel index arguments).
    pub(crate) fn upload_u32(&self, data: &[u32]) -> Handle {
        if data.len() < MIN_FLOATS {
            let mut padded = [0u32; MIN_FLOATS];
            padded[..data.len()].copy_from_slice(data);
            self.client.create_from_slice(u32::as_bytes(&padded))
        } else {
            self.client.create_from_slice(u32::as_bytes(data))
        }
    }

    /// A tensor over `storage`, which must hold the shape's elements.
    pub(crate) fn tensor(&self, storage: CubeStorage, shape: Shape) -> Result<Tensor<Self>> {
        if storage.len < shape.numel() {
            return Err(self.err(format!(
                "a buffer of {} floats cannot hold a tensor of shape {shape}",
                storage.len
            )));
        }
        Ok(Tensor::from_parts(storage, shape))
    }

    /// A tensor over `storage` with dimensions `dims`.
    pub(crate) fn tensor_dims(&self, storage: CubeStorage, dims: &[usize]) -> Result<Tensor<Self>> {
        self.tensor(storage, Shape::new(dims)?)
    }
}

/// How the backend's `Backend::attention_fused` (the attention of every model) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKernel {
    /// The fused flash kernels, which keep only the row log-sum-exp for the backward, for
    /// head dims up to 128 that the device's shared memory allows; the composite path for
    /// others.
    #[default]
    Fused,
    /// matmul, softmax, matmul, keeping the `[N, N]` probabilities (the CPU backend's
    /// sequence).
    Composite,
}

impl AttentionKernel {
    /// `"fused"` or `"composite"` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fused" | "flash" => Some(AttentionKernel::Fused),
            "composite" => Some(AttentionKernel::Composite),
            _ => None,
        }
    }

    /// The choice of `RAE_ATTENTION` (`fused` or `composite`); the default when it is
    /// unset. An unknown value is reported on stderr and the default used.
    pub fn from_env() -> Self {
        match std::env::var("RAE_ATTENTION") {
            Ok(v) => Self::parse(&v).unwrap_or_else(|| {
                eprintln!(
                    "rae-kernels: RAE_ATTENTION={v:?} is neither `fused` nor `composite`; \
                     using fused attention"
                );
                AttentionKernel::default()
            }),
            Err(_) => AttentionKernel::default(),
        }
    }
}
