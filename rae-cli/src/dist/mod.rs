//! Data-parallel runs (§7.6): which process this is, how the processes reduce, and the
//! rules every command follows in a group (only process 0 writes files and talks; a failed
//! process ends the whole group).
//!
//! `--dist auto` (the default) joins the MPI group when the process was started by an MPI
//! launcher (`mpirun`, `mpiexec`, `srun`) and runs alone otherwise; `--dist mpi` reduces
//! through host memory with MPI on every backend; `--dist nccl` reduces CUDA device buffers
//! with NCCL (bootstrapped through MPI); `--dist off` ignores a launcher. MPI needs a
//! `rae-cli` built with the `mpi` feature; NCCL also needs the `cuda` feature.

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(all(feature = "mpi", feature = "cuda"))]
mod nccl;

use std::sync::OnceLock;

use rae_core::train::{Collective, Single};
use rae_core::Backend;

use crate::errors::{CliError, CliResult};

/// What `--dist` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DistChoice {
    /// MPI when started by an MPI launcher, else one process.
    #[default]
    Auto,
    /// One process, whatever the environment says.
    Off,
    /// MPI, reducing through host memory.
    Mpi,
    /// NCCL on CUDA device buffers, bootstrapped through MPI.
    Nccl,
}

impl std::str::FromStr for DistChoice {
    type Err = CliError;
    fn from_str(s: &str) -> CliResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DistChoice::Auto),
            "off" | "none" | "single" => Ok(DistChoice::Off),
            "mpi" => Ok(DistChoice::Mpi),
            "nccl" => Ok(DistChoice::Nccl),
            other => Err(CliError::new(format!(
                "--dist {other:?}: unknown choice (auto, off, mpi or nccl)"
            ))),
        }
    }
}

/// How the group reduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One process.
    Single,
    /// MPI through host memory.
    Mpi,
    /// NCCL on device buffers.
    Nccl,
}

/// This process's place in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Index of this process.
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
    /// Index among the processes on this machine (the GPU a process takes by default).
    pub local_rank: usize,
    /// How it reduces.
    pub engine: Engine,
}

const SINGLE: Group = Group {
    rank: 0,
    world: 1,
    local_rank: 0,
    engine: Engine::Single,
};

static GROUP: OnceLock<Group> = OnceLock::new();

/// The group this process belongs to (one process until [`init`] says otherwise).
pub fn group() -> Group {
    *GROUP.get().unwrap_or(&SINGLE)
}

/// Whether this process writes files and prints (process 0).
pub fn is_lead() -> bool {
    group().rank == 0
}

/// Environment variables by which MPI launchers tell a process it is one of several
/// (Open MPI, MPICH/Hydra and `srun` through PMI or PMIx). Not `SLURM_NTASKS`: a batch
/// script has it for every command, launched or not.
const LAUNCHER_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "MPI_LOCALNRANKS",
];

fn launched_by_mpi() -> Option<&'static str> {
    LAUNCHER_VARS.into_iter().find(|v| {
        std::env::var(v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .is_some_and(|n| v.ends_with("RANK") || n > 1)
    })
}

/// What keeps the group alive: dropping it at the end of `main` finalises MPI.
#[allow(missing_debug_implementations)]
pub struct Guard {
    #[cfg(feature = "mpi")]
    _universe: Option<::mpi::environment::Universe>,
}

/// Joins the group `choice` asks for (before any backend exists, so that the device can
/// follow the local rank). Without the `mpi` feature, a launcher in the environment is an
/// error rather than N processes each training alone over each other's files.
pub fn init(choice: DistChoice) -> CliResult<Guard> {
    let want_mpi = match choice {
        DistChoice::Off => false,
        DistChoice::Mpi | DistChoice::Nccl => true,
        DistChoice::Auto => launched_by_mpi().is_some(),
    };
    if !want_mpi {
        return Ok(Guard {
            #[cfg(feature = "mpi")]
            _universe: None,
        });
    }
    #[cfg(feature = "mpi")]
    {
        let (universe, mut g) = mpi::init()?;
        if choice == DistChoice::Nccl {
            g.engine = Engine::Nccl;
        }
        let _ = GROUP.set(g);
        install_abort_on_panic();
        Ok(Guard {
            _universe: Some(universe),
        })
    }
    #[cfg(not(feature = "mpi"))]
    Err(CliError::new(match launched_by_mpi() {
        Some(v) => format!(
            "started by an MPI launcher ({v} is set), but this rae-cli was built without the \
             `mpi` feature: rebuild with `cargo build --release -p rae-cli --features mpi`, \
             or pass --dist off to run each process alone"
        ),
        None => "--dist mpi/nccl: this rae-cli was built without the `mpi` feature (rebuild \
                 with `--features mpi`)"
            .to_string(),
    }))
}

/// A panic in one process ends the whole group at once instead of leaving the others
/// waiting in a reduction.
#[cfg(feature = "mpi")]
fn install_abort_on_panic() {
    if group().world == 1 {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        abort(101);
    }));
}

/// Ends every process of the group with `code` (after this process printed why). In one
/// process: exits.
pub fn abort(code: i32) -> ! {
    #[cfg(feature = "mpi")]
    if group().world > 1 {
        mpi::abort(code);
    }
    std::process::exit(code)
}

/// Waits until every process of the group has arrived.
pub fn barrier() {
    #[cfg(feature = "mpi")]
    if group().world > 1 {
        mpi::barrier();
    }
}

/// The device a GPU backend takes: `--device` when given, else the local rank in a group.
pub fn device(asked: Option<usize>) -> Option<usize> {
    let g = group();
    asked.or((g.world > 1).then_some(g.local_rank))
}

/// The collective of the group on backend `b`.
pub fn collective<B: Backend>(b: &B) -> CliResult<Box<dyn Collective<B>>> {
    let g = group();
    match g.engine {
        Engine::Single => {
            let _ = b;
            Ok(Box::new(Single))
        }
        #[cfg(feature = "mpi")]
        Engine::Mpi => Ok(Box::new(rae_core::train::HostCollective::new(
            mpi::MpiComm::world(),
        ))),
        #[cfg(all(feature = "mpi", feature = "cuda"))]
        Engine::Nccl => nccl::collective(b),
        #[allow(unreachable_patterns)]
        _ => Err(CliError::new(
            "--dist nccl needs a rae-cli built with the `mpi` and `cuda` features; --dist mpi \
             reduces through host memory on every backend",
        )),
    }
}

/// Fails unless the command runs in one process: only `train` runs data-parallel.
pub fn single_only(command: &str) -> CliResult<()> {
    let g = group();
    if g.world > 1 {
        return Err(CliError::new(format!(
            "`{command}` runs in one process; only `train` runs data-parallel (this is process \
             {} of {})",
            g.rank, g.world
        )));
    }
    Ok(())
}

/// Writes `text` and a newline to stderr in one `write` call. `eprintln!` writes each
/// formatted piece separately, and under `mpirun` the pieces of two processes' lines
/// interleave mid-word; one call of at most `PIPE_BUF` bytes reaches the launcher whole.
pub fn tell(text: &str) {
    use std::io::Write;
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A line on stderr from process 0 only: the other processes of a group stay quiet (their
/// errors still reach the terminal through `main`).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {
        if $crate::dist::is_lead() {
            $crate::dist::tell(&format!($($t)*));
        }
    };
}
