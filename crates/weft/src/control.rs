//! The node's control ring: a shared-memory MPSC ring, `control.PID.N` in the
//! node's directory (N counts the nodes of process PID), through which another process (an operator's tool such
//! as `weft-rebalance`) asks the node to move a task between its agents. The
//! node's control task, on agent 0, applies each command at the next safe
//! point; a move is as lossless as [`Agents::move_task`](crate::Agents::move_task).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use weft_shm::{mpsc, ShmOptions};

use crate::agent::{Mover, Task, TaskId};
use crate::Error;

/// Frame type of a [`MoveTaskCommand`].
pub const MOVE_TASK: u32 = 1;

/// "Move task `task` to agent `to_agent`", as it sits in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MoveTaskCommand {
    /// The task's id ([`TaskId`]'s number).
    pub task: u64,
    /// The target agent's index.
    pub to_agent: u32,
    /// Zero.
    pub reserved: u32,
}

/// The control ring's name for node `n` (counting from 0) of process `pid`.
pub fn ring_name(pid: u32, n: u64) -> String {
    format!("control.{pid}.{n}")
}

/// Asks the node whose control ring is `ring` (see
/// [`Node::control_ring`](crate::Node::control_ring)) in directory `dir` to move
/// `task` to agent `to_agent`. Returns once the command is in the ring; the
/// node applies it at its next safe point (see [`ControlStats`] and the node's
/// task stats for the outcome). Attaches each call: not for a hot loop.
pub fn request_move(dir: &Path, ring: &str, task: TaskId, to_agent: usize) -> Result<(), Error> {
    let opts = ShmOptions::in_dir(dir);
    let mut ring = mpsc::Producer::attach(&opts, ring)?;
    let cmd = MoveTaskCommand {
        task: task.0,
        to_agent: to_agent
            .try_into()
            .map_err(|_| Error::Config(format!("agent {to_agent} out of range")))?,
        reserved: 0,
    };
    ring.offer_pod(MOVE_TASK, &cmd)
        .map_err(|e| Error::Config(format!("control ring: {e}")))
}

/// What the control task has done.
#[derive(Debug, Default)]
pub struct ControlStats {
    applied: AtomicU64,
    rejected: AtomicU64,
}

impl ControlStats {
    /// Commands applied (moves started).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Commands refused: unknown task or agent, task between agents, malformed.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Reads the control ring and applies its commands.
pub(crate) struct ControlTask {
    pub(crate) ring: mpsc::Consumer,
    pub(crate) mover: Mover,
    pub(crate) stats: Arc<ControlStats>,
}

impl Task for ControlTask {
    fn name(&self) -> &str {
        "control"
    }

    fn do_work(&mut self, _now_ns: u64) -> usize {
        let (mover, stats) = (&self.mover, &self.stats);
        self.ring
            .poll(16, |f| {
                let cmd = (f.type_id() == MOVE_TASK)
                    .then(|| f.as_pod::<MoveTaskCommand>().copied())
                    .flatten();
                let ok = cmd
                    .is_some_and(|c| mover.move_task(TaskId(c.task), c.to_agent as usize).is_ok());
                let counter = if ok { &stats.applied } else { &stats.rejected };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap_or(0)
    }
}
