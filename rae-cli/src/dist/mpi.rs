//! MPI through rsmpi: joining the group, and [`MpiComm`], the host-memory engine the core's
//! `HostCollective` lifts to every backend.

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use super::{Engine, Group};
use crate::errors::{CliError, CliResult};

/// MPI counts are `int`: larger buffers go in pieces of this many values.
const PIECE: usize = 1 << 30;

/// Initialises MPI and reads this process's rank, the group size and the local rank (the
/// rank among the processes sharing this machine's memory).
pub(super) fn init() -> CliResult<(Universe, Group)> {
    let universe = mpi::initialize().ok_or_else(|| {
        CliError::new("MPI: initialisation failed (MPI was already initialised in this process)")
    })?;
    let world = universe.world();
    let local = world.split_shared(world.rank());
    let g = Group {
        rank: world.rank() as usize,
        world: world.size() as usize,
        local_rank: local.rank() as usize,
        engine: Engine::Mpi,
    };
    Ok((universe, g))
}

/// Ends every process of MPI_COMM_WORLD.
pub(super) fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

/// Waits for every process of MPI_COMM_WORLD.
pub(super) fn barrier() {
    SimpleCommunicator::world().barrier();
}

/// Broadcasts `bytes` from `root` to every process (the NCCL id).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn broadcast_bytes(bytes: &mut [u8], root: usize) {
    SimpleCommunicator::world()
        .process_at_rank(root as i32)
        .broadcast_into(bytes);
}

/// MPI_COMM_WORLD as a host-memory engine. MPI's default error handler ends the job on a
/// communication failure, so no process is left waiting.
#[allow(missing_debug_implementations)]
pub struct MpiComm {
    comm: SimpleCommunicator,
}

impl MpiComm {
    /// The engine on MPI_COMM_WORLD.
    pub fn world() -> Self {
        MpiComm {
            comm: SimpleCommunicator::world(),
        }
    }
}

fn sum_in_place<T: mpi::datatype::Equivalence + Copy>(comm: &SimpleCommunicator, buf: &mut [T]) {
    for piece in buf.chunks_mut(PIECE) {
        let send = piece.to_vec();
        comm.all_reduce_into(&send[..], piece, SystemOperation::sum());
    }
}

impl rae_core::train::HostComm for MpiComm {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }
    fn world(&self) -> usize {
        self.comm.size() as usize
    }
    fn sum_f32(&mut self, buf: &mut [f32]) -> rae_core::Result<()> {
        sum_in_place(&self.comm, buf);
        Ok(())
    }
    fn sum_f64(&mut self, buf: &mut [f64]) -> rae_core::Result<()> {
        sum_in_place(&self.comm, buf);
        Ok(())
    }
    fn broadcast_f32(&mut self, buf: &mut [f32], root: usize) -> rae_core::Result<()> {
        let root = self.comm.process_at_rank(root as i32);
        for piece in buf.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
        Ok(())
    }
    fn barrier(&mut self) -> rae_core::Result<()> {
        self.comm.barrier();
        Ok(())
    }
}
