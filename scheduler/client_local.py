"""What ``Client.local`` checks before it starts anything: the settings of a head it may start, and a
``num_cpus`` it could not honour (a Ray cluster runs already)."""

from __future__ import annotations

from typing import Any

import ray

from policies.validation import FieldError, InvalidRequest, parse, quoted
from scheduler.head_auth import AuthSettings


def _new_head_auth(mode: Any, operator_key: str | None, window_s: float | None) -> dict | None:
    """The auth settings of a head ``Client.local`` may start, each value checked now (a wrong value is wrong
    whether or not a head runs); None for signed mode without an operator, which only a head started there
    needs (``_no_operator`` refuses it then)."""
    window = {} if window_s is None else {"window_s": window_s}
    if mode == "signed" and operator_key is None:
        parse(AuthSettings, {"mode": "dev", **window}, what="auth settings")  # the window's value on its own
        return None
    return parse(AuthSettings, {"mode": mode, "operator_key": operator_key, **window},
                 what="auth settings").model_dump()


def _no_operator(namespace: str) -> InvalidRequest:
    return InvalidRequest("auth settings", [FieldError(
        "operator_key", f"None and no key, with auth='signed' (no head runs in namespace {namespace!r} to join, so "
        "one would be started)", "the operator of a head started in signed mode: key=PRIVATE_KEY (its public key "
        "operates the head) or operator_key=BASE64_PUBLIC_KEY; or auth='dev'",
        'Client.local(auth="signed", key="operator.key")')])


class NumCpusUnused(InvalidRequest):
    """``Client.local(num_cpus=N)`` where it starts no Ray: a cluster runs already, with other than N CPUs
    (``cluster_cpus``). Refused rather than ignored (as ``ray.init`` refuses ``num_cpus`` with an address),
    before any actor is started; ``joined``: the cluster was found by ``ray.init(address="auto")``, not
    connected to by the caller."""

    def __init__(self, num_cpus: Any, cluster_cpus: float, joined: bool):
        self.num_cpus, self.cluster_cpus, self.joined = num_cpus, cluster_cpus, joined
        where = ("a Ray cluster runs already (this machine's, or $RAY_ADDRESS's)" if joined else
                 "this process is connected to a Ray cluster already")
        super().__init__("Client.local", [FieldError(
            "num_cpus", f"{quoted(num_cpus, 20)}, but {where}, with {cluster_cpus:g} CPUs, which joining it keeps; "
            "nothing was started", "None (or the cluster's own CPU count) when a Ray cluster runs: num_cpus sizes "
            "only a local Ray that Client.local starts; or stop that cluster first (`ray stop`) to start one of that "
            "size", "Client.local()")])

    def __reduce__(self):
        return (NumCpusUnused, (self.num_cpus, self.cluster_cpus, self.joined))


def _check_num_cpus(num_cpus: Any, joined: bool) -> None:
    """``NumCpusUnused`` if ``num_cpus`` is given and is not the CPU count of the cluster Ray is connected to
    (after ``ray.shutdown()`` if ``joined``: it only looked for a cluster, this process is left as it was)."""
    if num_cpus is None:
        return
    cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if cluster_cpus != num_cpus:
        if joined:
            ray.shutdown()
        raise NumCpusUnused(num_cpus, cluster_cpus, joined)
