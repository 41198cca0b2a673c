//! Data-parallel collectives on [`CudaBackend`] tensors with NCCL: [`NcclGroup`], a
//! [`Collective`] that reduces gradients GPU to GPU, and [`nccl_unique_id`], the 128-byte id
//! rank 0 creates and the launcher hands to every process (over MPI, say).
//!
//! NCCL is loaded at run time ([`nccl_probe`], [`nccl_find`]); where it is missing every
//! function here returns an error suggesting `--dist mpi` (reduction through host memory),
//! never a panic.
//!
//! # Ordering with CubeCL's work
//!
//! NCCL runs on a stream of its own, created in the device's primary context (the context
//! CubeCL's CUDA runtime uses, so its device pointers are valid there). Each operation:
//! takes the device pointers of the buffers through the compute client (`get_resource`,
//! which also orders the client's current stream after the buffers' streams), waits for
//! all queued CubeCL work with [`Backend::sync`], enqueues the NCCL calls (at most
//! [`GROUP_OPS`] per `ncclGroupStart`/`ncclGroupEnd`), and waits for the NCCL stream before
//! it returns. So NCCL never reads a buffer a kernel is still writing, later kernels see
//! NCCL's results, and no buffer is freed or reused while NCCL uses it (the resources are
//! held until the wait). This serialises compute and communication, correctness over speed.
//!
//! # Buffers
//!
//! A tensor is a contiguous run of `numel` f32 values from its handle's offset; exactly
//! `numel` values are reduced. The backend treats buffers as immutable snapshots (clones
//! share them), so a tensor is reduced in place only when its handle is its buffer's sole
//! user (`Handle::can_mut`); otherwise the result goes to a fresh buffer that replaces the
//! tensor, and the other holders keep the old values. `Mean` is the `f32` sum scaled by
//! `1/world` with the backend's `scale` (as the host-memory collective does).
//!
//! # Unverified without a GPU
//!
//! This was written and built on a machine with no GPU and no driver. Checked there:
//! loading NCCL (the `nvidia-nccl-cu13` wheel, NCCL 2.32), `ncclGetUniqueId` (it works
//! without a GPU) and the clean errors. Not run: `ncclCommInitRank` and every collective,
//! the device-pointer and context lookup through CubeCL's client, the stream ordering
//! described above, the in-place/fresh-buffer choice, and the behaviour with more than one
//! process (the GPU test in `tests/nccl.rs` runs a one-process group when a GPU is
//! present).

mod loader;

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::fmt;

use cubecl::server::Handle;
use cudarc::driver::sys as cu;
use rae_core::backend::Backend;
use rae_core::train::{Collective, ReduceOp};
use rae_core::{Error, Result, Tensor};

use crate::CudaBackend;
use loader::{nccl, nccl_err, Nccl, NcclComm, UniqueId, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM};
pub use loader::{nccl_find, NCCL_LIB_ENV};

/// The most NCCL operations enqueued in one `ncclGroupStart`/`ncclGroupEnd`.
pub const GROUP_OPS: usize = 128;

/// `Ok` when NCCL can be loaded (found as [`nccl_find`] describes, with the entry points
/// the collective uses); an error saying where it looked and suggesting `--dist mpi`
/// otherwise. The library is loaded once per process.
pub fn nccl_probe() -> Result<()> {
    nccl().map(|_| ())
}

/// The version `(major, minor, patch)` of the NCCL that [`nccl_probe`] loads.
pub fn nccl_version() -> Result<(u32, u32, u32)> {
    nccl()?.version()
}

/// A new NCCL unique id (`ncclGetUniqueId`): made by one process (rank 0) and given to
/// every process of the group for [`NcclGroup::new`]. Needs NCCL, not a GPU. NCCL starts
/// its bootstrap listener in the calling process and writes its address into the id, so
/// that process must live until every rank has joined (`NCCL_SOCKET_IFNAME` chooses the
/// network interface).
pub fn nccl_unique_id() -> Result<[u8; 128]> {
    let n = nccl()?;
    let mut id = UniqueId { internal: [0; 128] };
    // SAFETY: writes the 128-byte id.
    n.check(
        unsafe { (n.get_unique_id)(&mut id) },
        "ncclGetUniqueId",
        None,
    )?;
    Ok(id.internal)
}

/// One process's member of an NCCL communicator over CUDA devices: the [`Collective`] of
/// a data-parallel run on [`CudaBackend`], one process per GPU.
pub struct NcclGroup {
    nccl: &'static Nccl,
    /// The backend (a clone: the client is shared) for the host-value reductions.
    backend: CudaBackend,
    comm: NcclComm,
    stream: cu::CUstream,
    device: cu::CUdevice,
    ctx: cu::CUcontext,
    rank: usize,
    world: usize,
}

// SAFETY: the communicator, stream and context are plain handles that CUDA and NCCL allow
// to be used from any thread, one thread at a time; every method that uses them takes
// `&mut self` (or is `Drop`) and makes the context current on the calling thread first.
unsafe impl Send for NcclGroup {}

impl fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("library", &self.nccl.path)
            .field("backend", &self.backend.name())
            .finish()
    }
}

/// A buffer's device pointer and size in bytes, with the client's resource that keeps it
/// alive (to be held until NCCL is done with the pointer).
struct DevicePtr {
    _keep: Box<dyn Any>,
    ptr: u64,
    bytes: u64,
}

fn device_ptr(b: &CudaBackend, handle: &Handle) -> Result<DevicePtr> {
    let r = b
        .client()
        .get_resource(handle.clone())
        .map_err(|e| nccl_err(format!("getting a buffer's device pointer: {e}")))?;
    let (ptr, bytes) = (r.resource().ptr, r.resource().size);
    Ok(DevicePtr {
        _keep: Box::new(r),
        ptr,
        bytes,
    })
}

/// The CUDA device a device pointer belongs to.
fn device_of(ptr: u64) -> Result<cu::CUdevice> {
    let mut ordinal: c_int = -1;
    // SAFETY: the attribute is an int written to `ordinal`; `ptr` is a live allocation.
    unsafe {
        cu::cuPointerGetAttribute(
            (&mut ordinal as *mut c_int).cast::<c_void>(),
            cu::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
            ptr,
        )
    }
    .result()
    .map_err(|e| nccl_err(format!("finding the backend's CUDA device: {e:?}")))?;
    cudarc::driver::result::device::get(ordinal)
        .map_err(|e| nccl_err(format!("CUDA device {ordinal}: {e:?}")))
}

/// One NCCL operation on one tensor: `count` f32 values from `src` to `dst` (the same
/// buffer when in place); `out` is the fresh tensor that replaces the input afterwards.
struct Slot {
    src: DevicePtr,
    dst: Option<DevicePtr>,
    count: usize,
    out: Option<Tensor<CudaBackend>>,
}

impl Slot {
    fn dst_ptr(&self) -> u64 {
        self.dst.as_ref().map_or(self.src.ptr, |d| d.ptr)
    }
}

impl NcclGroup {
    /// Joins the communicator `id` (from [`nccl_unique_id`] on one process) as process
    /// `rank` of `world`, on `b`'s device (`ncclCommInitRank`, which waits until all `world`
    /// processes have joined). Errors, never panics, when NCCL is missing, the arguments are
    /// inconsistent, or NCCL fails (two ranks on one GPU, for instance).
    pub fn new(b: &CudaBackend, rank: usize, world: usize, id: [u8; 128]) -> Result<Self> {
        let nccl = nccl()?;
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                "nccl group",
                format!("rank {rank} is not a process of {world}"),
            ));
        }
        let nranks = c_int::try_from(world)
            .map_err(|_| Error::invalid("nccl group", format!("{world} processes")))?;
        // The backend's device, from one of its buffers.
        let probe = b.upload(&[0.0], &[1])?;
        let device = device_of(device_ptr(b, probe.storage().handle())?.ptr)?;
        // SAFETY: `device` is a valid device; the reference is released in `Drop`.
        let ctx = unsafe { cudarc::driver::result::primary_ctx::retain(device) }
            .map_err(|e| nccl_err(format!("retaining the device's context: {e:?}")))?;
        let mut group = NcclGroup {
            nccl,
            backend: b.clone(),
            comm: std::ptr::null_mut(),
            stream: std::ptr::null_mut(),
            device,
            ctx,
            rank,
            world,
        };
        group.enter()?;
        group.stream = cudarc::driver::result::stream::create(
            cudarc::driver::result::stream::StreamKind::NonBlocking,
        )
        .map_err(|e| nccl_err(format!("creating the NCCL stream: {e:?}")))?;
        let mut comm: NcclComm = std::ptr::null_mut();
        // SAFETY: `comm` receives the communicator; the id is passed by value. The rank
        // fits in c_int as it is below `nranks`.
        let code = unsafe {
            (nccl.comm_init_rank)(&mut comm, nranks, UniqueId { internal: id }, rank as c_int)
        };
        nccl.check(code, "ncclCommInitRank", None)?;
        group.comm = comm;
        Ok(group)
    }

    /// Makes the device's primary context current on this thread (NCCL and the stream
    /// calls act on the current context).
    fn enter(&self) -> Result<()> {
        // SAFETY: `ctx` was retained in `new` and is released only in `Drop`.
        unsafe { cudarc::driver::result::ctx::set_current(self.ctx) }
            .map_err(|e| nccl_err(format!("making the device's context current: {e:?}")))
    }

    /// Device pointers for every tensor: the tensor's own buffer, and a fresh one for the
    /// result unless the tensor may be overwritten in place.
    fn prepare(&self, b: &CudaBackend, tensors: &[Tensor<CudaBackend>]) -> Result<Vec<Slot>> {
        let mut slots = Vec::with_capacity(tensors.len());
        for t in tensors {
            let count = t.numel();
            let handle = t.storage().handle();
            // Checked before any clone of the handle is made (a clone is another user).
            let in_place = handle.can_mut();
            let src = device_ptr(b, handle)?;
            // The tensors must live on the communicator's device (checked once per call).
            if slots.is_empty() && device_of(src.ptr)? != self.device {
                return Err(Error::invalid(
                    "nccl group",
                    format!(
                        "the tensors are on another device than the group's ({})",
                        self.backend.name()
                    ),
                ));
            }
            let bytes = count as u64 * 4;
            if src.bytes < bytes {
                return Err(nccl_err(format!(
                    "a buffer of {} bytes holds a tensor of shape {} ({bytes} bytes)",
                    src.bytes,
                    t.shape()
                )));
            }
            let (dst, out) = if in_place || count == 0 {
                (None, None)
            } else {
                let out = b.full(t.dims(), 0.0)?;
                (Some(device_ptr(b, out.storage().handle())?), Some(out))
            };
            slots.push(Slot {
                src,
                dst,
                count,
                out,
            });
        }
        Ok(slots)
    }

    /// Waits for CubeCL's queued work, enqueues `op` for every non-empty slot in groups of
    /// [`GROUP_OPS`], and waits until NCCL is done.
    fn run(
        &self,
        b: &CudaBackend,
        slots: &[Slot],
        what: &str,
        op: impl Fn(&Slot) -> loader::NcclResult,
    ) -> Result<()> {
        b.sync()?;
        self.enter()?;
        let n = self.nccl;
        let live: Vec<&Slot> = slots.iter().filter(|s| s.count > 0).collect();
        for chunk in live.chunks(GROUP_OPS) {
            // SAFETY: no arguments; paired with the ncclGroupEnd below on every path.
            n.check(unsafe { (n.group_start)() }, "ncclGroupStart", None)?;
            let mut enqueued = Ok(());
            for s in chunk {
                enqueued = n.check(op(s), what, Some(self.comm));
                if enqueued.is_err() {
                    break;
                }
            }
            // SAFETY: closes the group opened above.
            let ended = n.check(unsafe { (n.group_end)() }, "ncclGroupEnd", Some(self.comm));
            enqueued?;
            ended?;
        }
        self.wait(what)
    }

    /// Waits for the NCCL stream and reports an asynchronous NCCL error.
    fn wait(&self, what: &str) -> Result<()> {
        // SAFETY: the stream was created in `new` and lives until `Drop`.
        unsafe { cudarc::driver::result::stream::synchronize(self.stream) }
            .map_err(|e| nccl_err(format!("{what}: waiting for the NCCL stream: {e:?}")))?;
        let mut status: loader::NcclResult = 0;
        let n = self.nccl;
        // SAFETY: `comm` is live; writes one ncclResult_t.
        let code = unsafe { (n.comm_get_async_error)(self.comm, &mut status) };
        n.check(code, "ncclCommGetAsyncError", Some(self.comm))?;
        n.check(status, what, Some(self.comm))
    }

    /// Replaces each tensor whose result went to a fresh buffer.
    fn finish(slots: Vec<Slot>, tensors: &mut [Tensor<CudaBackend>]) {
        for (t, s) in tensors.iter_mut().zip(slots) {
            if let Some(out) = s.out {
                *t = out;
            }
        }
    }
}

impl Collective<CudaBackend> for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce(
        &mut self,
        b: &CudaBackend,
        tensors: &mut [Tensor<CudaBackend>],
        op: ReduceOp,
    ) -> Result<()> {
        let slots = self.prepare(b, tensors)?;
        let (n, comm, stream) = (self.nccl, self.comm, self.stream.cast::<c_void>());
        self.run(b, &slots, "ncclAllReduce", |s| {
            // SAFETY: both pointers address at least `count` f32 values of live buffers
            // (checked in `prepare`, held in `slots` until `run` has waited).
            unsafe {
                (n.all_reduce)(
                    s.src.ptr as *const c_void,
                    s.dst_ptr() as *mut c_void,
                    s.count,
                    NCCL_FLOAT32,
                    NCCL_SUM,
                    comm,
                    stream,
                )
            }
        })?;
        Self::finish(slots, tensors);
        if op == ReduceOp::Mean {
            let inv = 1.0 / self.world as f32;
            for t in tensors.iter_mut() {
                *t = b.scale(t, inv)?;
            }
        }
        Ok(())
    }

    fn broadcast(
        &mut self,
        b: &CudaBackend,
        tensors: &mut [Tensor<CudaBackend>],
        root: usize,
    ) -> Result<()> {
        rae_core::train::check_root(root, self.world)?;
        let slots = self.prepare(b, tensors)?;
        let (n, comm, stream) = (self.nccl, self.comm, self.stream.cast::<c_void>());
        self.run(b, &slots, "ncclBroadcast", |s| {
            // SAFETY: as in `all_reduce`; `root` fits in c_int as it is below `world`.
            unsafe {
                (n.broadcast)(
                    s.src.ptr as *const c_void,
                    s.dst_ptr() as *mut c_void,
                    s.count,
                    NCCL_FLOAT32,
                    root as c_int,
                    comm,
                    stream,
                )
            }
        })?;
        Self::finish(slots, tensors);
        Ok(())
    }

    fn reduce_scalars(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let b = self.backend.clone();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let handle = b.client().create_from_slice(&bytes);
        let slot = Slot {
            src: device_ptr(&b, &handle)?,
            dst: None,
            count: values.len(),
            out: None,
        };
        let (n, comm, stream) = (self.nccl, self.comm, self.stream.cast::<c_void>());
        self.run(&b, std::slice::from_ref(&slot), "ncclAllReduce", |s| {
            // SAFETY: the buffer holds `count` f64 values and is held by `slot`.
            unsafe {
                (n.all_reduce)(
                    s.src.ptr as *const c_void,
                    s.src.ptr as *mut c_void,
                    s.count,
                    NCCL_FLOAT64,
                    NCCL_SUM,
                    comm,
                    stream,
                )
            }
        })?;
        drop(slot);
        let out = b
            .client()
            .read_one(handle)
            .map_err(|e| nccl_err(format!("reading the reduced values: {e}")))?;
        if out.len() < values.len() * 8 {
            return Err(nccl_err(format!(
                "read {} bytes for {} reduced values",
                out.len(),
                values.len()
            )));
        }
        let scale = match op {
            ReduceOp::Sum => 1.0,
            ReduceOp::Mean => self.world as f64,
        };
        for (v, chunk) in values.iter_mut().zip(out.chunks_exact(8)) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(chunk);
            *v = f64::from_ne_bytes(raw) / scale;
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        // An all-reduce returns on no process before every process has contributed.
        self.reduce_scalars(&mut [0.0], ReduceOp::Sum)
    }
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        // Errors cannot be reported here; every operation has already waited for NCCL.
        let _ = self.enter();
        if !self.comm.is_null() {
            // SAFETY: the communicator is live and no operation is pending on it.
            let _ = unsafe { (self.nccl.comm_destroy)(self.comm) };
        }
        if !self.stream.is_null() {
            // SAFETY: created in `new`, no work pending.
            let _ = unsafe { cudarc::driver::result::stream::destroy(self.stream) };
        }
        // SAFETY: releases the reference retained in `new`.
        let _ = unsafe { cudarc::driver::result::primary_ctx::release(self.device) };
    }
}
