//! NCCL for a CUDA run: process 0 makes the NCCL id, MPI broadcasts it, every process
//! joins one communicator on its GPU. Other backends are an error that points at MPI.

use std::any::Any;

use rae_backend_cuda::nccl::{nccl_unique_id, NcclGroup};
use rae_backend_cuda::CudaBackend;
use rae_core::train::Collective;
use rae_core::Backend;

use super::group as this_group;
use crate::errors::{CliError, CliResult};

/// The NCCL collective of the group on `b`, which must be the CUDA backend.
pub(super) fn collective<B: Backend>(b: &B) -> CliResult<Box<dyn Collective<B>>> {
    let g = this_group();
    let Some(cuda) = (b as &dyn Any).downcast_ref::<CudaBackend>() else {
        return Err(CliError::new(format!(
            "--dist nccl reduces CUDA device buffers, but this run is on {}: use --backend cuda, \
             or --dist mpi",
            b.name()
        )));
    };
    let hint = |e: rae_core::Error| {
        CliError::new(format!(
            "--dist nccl: {e} (--dist mpi reduces through host memory instead)"
        ))
    };
    let mut id = [0u8; 128];
    let made = if g.rank == 0 {
        nccl_unique_id().map(|v| id = v)
    } else {
        Ok(())
    };
    // Every process takes part in the broadcast, even when process 0 failed (it then sends
    // zeros and aborts the group with its error).
    super::mpi::broadcast_bytes(&mut id, 0);
    made.map_err(hint)?;
    let nccl = NcclGroup::new(cuda, g.rank, g.world, id).map_err(hint)?;
    let boxed: Box<dyn Any> = Box::new(Box::new(nccl) as Box<dyn Collective<CudaBackend>>);
    boxed
        .downcast::<Box<dyn Collective<B>>>()
        .map(|b| *b)
        .map_err(|_| CliError::new("--dist nccl: internal error (backend type)"))
}
