"""Head replicas on one shared store: whose a job is, and how a client reaches that head.

A job belongs to the head that admitted it: its record names that head (``"head"``: the actor's
namespace and name, the same across its restarts), only that head takes it back at a restart
(``scheduler.head_state``), and only that head can stop it or hand over its value, because only it
holds the job (its dispatch, its worker, its result reference). Any replica answers a job's status
and explanation from the store; ``cancel`` and ``wait_result`` through another replica are answered
with ``JobOfAnotherHead`` naming the owner, which the client follows (``scheduler.job_handle``), as
a Redis Cluster client follows a ``MOVED`` answer to the node that owns a key. Before, such a cancel
answered the job's stored state and cancelled nothing, and a result waited on there ended "no longer
available" while the owner still held it.
"""

from __future__ import annotations

from scheduler.names import HEAD_NAME, NAMESPACE


def head_owner(namespace: str, name: str) -> str:
    """How a job record names its head: ``"namespace/name"``."""
    return f"{namespace}/{name}"


DEFAULT_OWNER = head_owner(NAMESPACE, HEAD_NAME)
"""Whose a job record of an earlier release (no ``"head"``) is: the default head's."""


def recorded_head(record: dict) -> str:
    """The head a (readable) job record names."""
    return record.get("head") or DEFAULT_OWNER


def split_owner(owner: str) -> tuple[str, str]:
    """``(namespace, name)`` of an owner string (a name may hold ``/``; a namespace does not)."""
    namespace, _, name = owner.partition("/")
    return namespace, name


class JobOfAnotherHead(LookupError):
    """Raised by a head asked to cancel a job, or hand over its result, that another head replica admitted
    (``owner``: that head's ``"namespace/name"``). The client follows it to the owner; nothing was changed."""

    def __init__(self, task_id: str, owner: str) -> None:
        super().__init__(task_id, owner)  # (the args rebuild it when Ray pickles it to the caller)
        self.task_id, self.owner = task_id, owner

    def __str__(self) -> str:
        namespace, name = split_owner(self.owner)
        return (f"job {self.task_id} was admitted by head replica {self.owner!r}, and only that head can cancel it "
                f"or hand over its result; ask it there (Client(namespace={namespace!r}) reaches it"
                f"{'' if name == HEAD_NAME else f', the actor named {name!r}'}); nothing was changed here")


def head_of(owner: str):
    """The actor of head replica ``owner`` (``"namespace/name"``, as a job record names it), which a
    ``JobOfAnotherHead`` answer sends a job's calls to; ``ConnectionError`` if it is not running."""
    import ray  # (the rest of this module is plain data: the head's state keeping imports it too)

    namespace, name = split_owner(owner)
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise ConnectionError(f"head replica {owner!r}, which admitted this job, is not running in this Ray "
                              "cluster: only it can cancel the job or hand over its result, and nothing was "
                              f"changed; start it again (`coopsched start` in namespace {namespace!r}, or "
                              f"start_head(namespace={namespace!r}, name={name!r})): it takes its jobs back "
                              "from the store") from None
