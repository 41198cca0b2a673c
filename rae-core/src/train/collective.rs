//! Data-parallel training (§7.6): the [`Collective`] a process reduces through, the
//! single-process [`Single`], the adapter [`HostCollective`] that lifts any host-memory
//! engine ([`HostComm`]: MPI, say) to every backend in bounded buckets, and the [`Shard`]
//! that makes a W-process step draw exactly what the one-process step draws.
//!
//! Every random draw of a step is counter-based and takes a fixed number of stream
//! positions per sample. Process `r` of `W` with a local batch of `n` samples therefore
//! takes the positions samples `r·n … r·n + n − 1` take in the one-process step with batch
//! `W·n`, and every process advances its streams past the whole global batch. With the
//! gradients averaged over processes, a W-process step equals the one-process step up to the
//! summation order of the reduction.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// How values from all processes combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over processes.
    Sum,
    /// The sum divided by the number of processes.
    Mean,
}

/// The collective operations a data-parallel run needs, on tensors of backend `B`. Every
/// process must call the same operations in the same order with tensors of the same shapes;
/// an implementation reports a failed operation as an error (a failed process is the
/// launcher's to end: see the command-line tool's MPI abort).
pub trait Collective<B: Backend> {
    /// This process's index, `0..world()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world(&self) -> usize;
    /// Replaces every tensor by its reduction over all processes.
    fn all_reduce(&mut self, b: &B, tensors: &mut [Tensor<B>], op: ReduceOp) -> Result<()>;
    /// Replaces every tensor by the one of process `root`.
    fn broadcast(&mut self, b: &B, tensors: &mut [Tensor<B>], root: usize) -> Result<()>;
    /// Reduces host values (losses and other logged numbers) in place.
    fn reduce_scalars(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()>;
    /// Waits until every process has arrived.
    fn barrier(&mut self) -> Result<()>;
    /// This process's share of every global batch.
    fn shard(&self) -> Shard {
        Shard {
            rank: self.rank(),
            world: self.world(),
        }
    }
}

/// The collective of a run with one process: every operation leaves its input as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl<B: Backend> Collective<B> for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce(&mut self, _: &B, _: &mut [Tensor<B>], _: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &B, _: &mut [Tensor<B>], _: usize) -> Result<()> {
        Ok(())
    }
    fn reduce_scalars(&mut self, _: &mut [f64], _: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A communication engine on host memory (MPI, for instance): in-place reductions and
/// broadcasts of `f32`/`f64` buffers. [`HostCollective`] makes it a [`Collective`] for every
/// backend.
pub trait HostComm {
    /// This process's index.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world(&self) -> usize;
    /// Sums `buf` over all processes, in place.
    fn sum_f32(&mut self, buf: &mut [f32]) -> Result<()>;
    /// Sums `buf` over all processes, in place.
    fn sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
    /// Replaces `buf` by process `root`'s.
    fn broadcast_f32(&mut self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Waits until every process has arrived.
    fn barrier(&mut self) -> Result<()>;
}

/// Default bucket size of [`HostCollective`]: 16 Mi values (64 MiB of `f32`).
pub const DEFAULT_BUCKET: usize = 16 << 20;

/// A [`HostComm`] as a [`Collective`] for any backend: tensors are downloaded into one host
/// buffer per bucket (consecutive tensors up to `bucket` values; a larger tensor forms a
/// bucket of its own), reduced in place, and uploaded back. Host memory holds one bucket at a
/// time, never a second copy of all gradients.
#[derive(Debug)]
pub struct HostCollective<C> {
    /// The engine.
    pub comm: C,
    /// Values per bucket.
    pub bucket: usize,
}

impl<C: HostComm> HostCollective<C> {
    /// `comm` with [`DEFAULT_BUCKET`].
    pub fn new(comm: C) -> Self {
        HostCollective {
            comm,
            bucket: DEFAULT_BUCKET,
        }
    }

    fn buckets<B: Backend>(&self, tensors: &[Tensor<B>]) -> Vec<core::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut fill) = (0, 0);
        for (i, t) in tensors.iter().enumerate() {
            if i > start && fill + t.numel() > self.bucket.max(1) {
                out.push(start..i);
                (start, fill) = (i, 0);
            }
            fill += t.numel();
        }
        if start < tensors.len() {
            out.push(start..tensors.len());
        }
        out
    }

    fn staged<B: Backend>(
        &mut self,
        b: &B,
        tensors: &mut [Tensor<B>],
        f: &mut dyn FnMut(&mut C, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        for r in self.buckets(tensors) {
            let group = &mut tensors[r];
            let mut buf = Vec::with_capacity(group.iter().map(Tensor::numel).sum());
            for t in group.iter() {
                buf.extend_from_slice(&b.download(t)?);
            }
            f(&mut self.comm, &mut buf)?;
            let mut at = 0;
            for t in group.iter_mut() {
                let n = t.numel();
                *t = b.upload(&buf[at..at + n], t.dims())?;
                at += n;
            }
        }
        Ok(())
    }
}

impl<B: Backend, C: HostComm> Collective<B> for HostCollective<C> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world()
    }
    fn all_reduce(&mut self, b: &B, tensors: &mut [Tensor<B>], op: ReduceOp) -> Result<()> {
        if self.comm.world() == 1 {
            return Ok(());
        }
        let inv = 1.0 / self.comm.world() as f32;
        self.staged(b, tensors, &mut |c, buf| {
            c.sum_f32(buf)?;
            if op == ReduceOp::Mean {
                buf.iter_mut().for_each(|v| *v *= inv);
            }
            Ok(())
        })
    }
    fn broadcast(&mut self, b: &B, tensors: &mut [Tensor<B>], root: usize) -> Result<()> {
        check_root(root, self.comm.world())?;
        if self.comm.world() == 1 {
            return Ok(());
        }
        self.staged(b, tensors, &mut |c, buf| c.broadcast_f32(buf, root))
    }
    fn reduce_scalars(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        if self.comm.world() == 1 {
            return Ok(());
        }
        self.comm.sum_f64(values)?;
        if op == ReduceOp::Mean {
            let w = self.comm.world() as f64;
            values.iter_mut().for_each(|v| *v /= w);
        }
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        self.comm.barrier()
    }
}

/// An error unless `root` is a process of a group of `world` (what every broadcast checks).
pub fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(Error::invalid(
            "broadcast",
            format!("root {root} is not a process of {world}"),
        ));
    }
    Ok(())
}

/// The gradient hook of a data-parallel run: averages the gradients over the processes of a
/// [`Collective`] (each process holds the mean over its equal share of the global batch, so
/// the average is the gradient of the global batch's mean loss).
#[allow(missing_debug_implementations)]
pub struct AverageGrads<'a, B: Backend>(pub &'a mut dyn Collective<B>);

impl<B: Backend> super::GradHook<B> for AverageGrads<'_, B> {
    fn reduce(&mut self, b: &B, grads: &mut [Tensor<B>]) -> Result<()> {
        self.0.all_reduce(b, grads, ReduceOp::Mean)
    }
}

/// Replaces every parameter of `m` (buffers too) by process `root`'s, matched by name.
pub fn broadcast_module<B: Backend, M: Module<B>>(
    b: &B,
    m: &mut M,
    coll: &mut dyn Collective<B>,
    root: usize,
) -> Result<()> {
    if coll.world() == 1 {
        return Ok(());
    }
    let (names, mut values) = super::named_params(m, false);
    coll.broadcast(b, &mut values, root)?;
    super::set_params(m, &names, &values, false)
}

/// Which part of every global batch this process takes: process `rank` of `world`, each
/// with an equal share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This process's index.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
}

impl Shard {
    /// The whole batch in one process.
    pub const SINGLE: Shard = Shard { rank: 0, world: 1 };

    /// The samples `start..end` of a global batch of `global` this process takes, or an
    /// error when the batch does not split evenly.
    pub fn range(&self, global: usize) -> Result<core::ops::Range<usize>> {
        if self.world == 0 || self.rank >= self.world {
            return Err(Error::invalid(
                "shard",
                format!("process {} of {}", self.rank, self.world),
            ));
        }
        if !global.is_multiple_of(self.world) || global == 0 {
            return Err(Error::invalid(
                "shard",
                format!(
                    "a global batch of {global} does not split evenly over {} processes",
                    self.world
                ),
            ));
        }
        let n = global / self.world;
        Ok(self.rank * n..(self.rank + 1) * n)
    }

    /// For a local batch of `local` samples drawing `per_sample` positions each: advances
    /// `stream` past the whole global batch and returns a cursor at this process's first
    /// position, so that the processes together draw what one process with the global
    /// batch draws.
    pub fn take(&self, stream: &mut PhiloxStream, local: usize, per_sample: u64) -> PhiloxStream {
        let first = stream.advance((local * self.world) as u64 * per_sample);
        PhiloxStream {
            key: stream.key,
            position: first.wrapping_add((self.rank * local) as u64 * per_sample),
        }
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::SINGLE
    }
}
