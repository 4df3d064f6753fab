"""Checkpoints, inside a task: save where it is, so that its next attempt starts from there.

A Coopsched task may be stopped before it ends and run again (its executor reclaimed by its owner, an urgent
task of its coop taking its place, its worker or node lost; ``max_retries``). Without a checkpoint the next
attempt starts from the beginning. With one::

    from scheduler.checkpoint import load_checkpoint, save_checkpoint

    def train(epochs):
        state = load_checkpoint(default={"epoch": 0, "weights": None})
        for epoch in range(state["epoch"], epochs):
            state["weights"] = step(state["weights"])
            state["epoch"] = epoch + 1
            save_checkpoint(state)  # the head keeps the last one, in its store
        return state["weights"]

``save_checkpoint`` pickles the state (cloudpickle, at most ``MAX_CHECKPOINT_BYTES``) and hands it to the
head that admitted the task (``scheduler.head_checkpoints``), which keeps it until the job finishes;
``load_checkpoint`` gives back the last one saved by any attempt of this task, or ``default``. Outside a
Coopsched task (a test calling the function directly, a plain Ray task) both do nothing: save answers False,
load answers ``default``. A refusal (a state too large, an attempt that is no longer the running one) raises
``CheckpointRefused`` saying why. Each call is one round trip to the head: save at progress worth keeping
(every epoch, every few minutes), not every loop.

A task stopped to make room is killed at once, losing what it did since its last save, unless it was
submitted with a grace (``Client.submit(..., stop_grace_s=30)``, as Kubernetes' termination grace period or
Slurm's ``GraceTime``): then it is asked to end first, ``stop_requested()`` turns True inside it, and it has
that long to save and return before it is killed::

    for epoch in range(state["epoch"], epochs):
        ...
        if stop_requested():
            save_checkpoint(state)
            return None  # (this attempt's value is not kept: the task runs again, from the checkpoint)
"""

from __future__ import annotations

from typing import Any

import ray
from ray import cloudpickle

from executors.task_context import TaskContext, current_task, stop_requested
from scheduler.head_checkpoints import MAX_CHECKPOINT_BYTES

__all__ = ["MAX_CHECKPOINT_BYTES", "CheckpointRefused", "current_task", "load_checkpoint", "save_checkpoint",
           "stop_requested"]

CALL_TIMEOUT_S = 60.0  # a head restarting answers within this


class CheckpointRefused(RuntimeError):
    """The head did not keep (or give back) the checkpoint; the message says why. Nothing was changed."""


def save_checkpoint(state: Any) -> bool:
    """Keep ``state`` as this task's checkpoint (replacing the one before): True once the head stored it,
    False outside a Coopsched task. Raises ``CheckpointRefused`` (nothing kept) if it is refused."""
    context = current_task()
    if context is None:
        return False
    data = cloudpickle.dumps(state)
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointRefused(
            f"state: pickled, it is {len(data):,} bytes; a checkpoint holds at most {MAX_CHECKPOINT_BYTES:,} "
            "(e.g. save the arrays to a file or with ray.put and checkpoint their paths or the step reached)")
    answer = ray.get(_head(context).save_checkpoint.remote(context.task_id, context.attempt, context.token, data),
                     timeout=CALL_TIMEOUT_S)
    if "refused" in answer:
        raise CheckpointRefused(answer["refused"])
    return True


def load_checkpoint(default: Any = None) -> Any:
    """This task's last checkpoint (saved by this attempt or an earlier one), or ``default`` when none was
    saved or outside a Coopsched task. Raises ``CheckpointRefused`` if the head refuses."""
    context = current_task()
    if context is None:
        return default
    answer = ray.get(_head(context).load_checkpoint.remote(context.task_id, context.attempt, context.token),
                     timeout=CALL_TIMEOUT_S)
    if "refused" in answer:
        raise CheckpointRefused(answer["refused"])
    stored = answer["checkpoint"]
    return default if stored is None else cloudpickle.loads(stored["data"])


_heads: dict[tuple[str, str], Any] = {}


def _head(context: TaskContext) -> Any:
    """The handle of the head that admitted the task (by name: it outlives the head's restarts)."""
    key = (context.head, context.namespace)
    handle = _heads.get(key)
    if handle is None:
        handle = _heads[key] = ray.get_actor(context.head, namespace=context.namespace)
    return handle
