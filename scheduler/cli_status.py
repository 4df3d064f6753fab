"""``coopsched status``: the Ray cluster, the head of this namespace and what it holds, at a glance.

It asks only what any caller may ask (``ping`` is open in signed mode too), plus the executor list when the
caller's key may read it; every part it cannot learn says why instead of failing the command. Exit 0 when a
head answers, 1 when none runs in the namespace (the output says how to start one).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from scheduler.cli_commands import EXIT_ERROR, EXIT_OK, _connect, _coopsched_actors, emit, key_of


def cmd_status(args) -> int:
    import ray

    from scheduler.client import Client, _private_key
    from scheduler.head_auth import AccessRefused
    from scheduler.local_ray import started_here
    key = _private_key(key_of(args))  # (a bad --key is bad input, cluster or not)
    _connect(args)
    address = ray.get_runtime_context().gcs_address
    data: dict[str, Any] = {
        "ray_address": address, "started_by_coopsched": started_here(address) is not None,
        "cluster_cpus": float(ray.cluster_resources().get("CPU", 0.0)), "nodes": len(ray.nodes()),
        "namespace": args.namespace, "head": None,
        "other_namespaces": sorted({a.partition("/")[0] for a in _coopsched_actors(besides=args.namespace)})}
    try:
        client = Client(namespace=args.namespace, key=key, _connect=False)
    except ConnectionError:
        emit(args, data, _render)
        return EXIT_ERROR
    try:
        head = data["head"] = {**client.ping(), "mode": None}
    except AccessRefused as exc:  # signed mode, and no key (or one the head does not know): it runs, no more
        data["head"] = {"mode": "signed", "refused": exc.message}
        emit(args, data, _render)
        return EXIT_OK
    head["mode"] = "development" if client.dev_mode else "signed"
    try:
        rows = client.executors()
    except AccessRefused as exc:  # (a key that may not list executors, or none in signed mode)
        head["executors_by_status"] = None
        head["executors_refused"] = exc.message
    else:
        head["executors_by_status"] = dict(Counter(r["status"] for r in rows))
        head["running"] = sum(r["running"] for r in rows)
    emit(args, data, _render)
    return EXIT_OK


def _render(d: dict[str, Any]) -> str:
    ray_line = (f"{d['ray_address']}, {d['nodes']} node(s), {d['cluster_cpus']:g} CPUs"
                + (" (started by `coopsched start`: `coopsched stop` stops it too)" if d["started_by_coopsched"]
                   else ""))
    lines = [("ray cluster", ray_line)]
    head = d["head"]
    if head is None:
        lines.append(("head", f"none in namespace {d['namespace']!r}: start one with `coopsched start --dev` (or "
                              "--operator-key FILE_OR_PUBKEY for signed mode)"))
    elif "refused" in head:
        lines.append(("head", f"running in namespace {d['namespace']!r}, signed mode; the rest needs a registered "
                              f"key: {head['refused']}"))
    else:
        up = max(0.0, time.time() - float(head.get("started_at") or time.time()))
        lines.append(("head", f"running in namespace {d['namespace']!r}, {head['mode']} mode, up {_duration(up)}"))
        lines.append(("store", f"{head['store']}" + (f" ({head['store_resyncs']} rebuild(s) of memory after a refused "
                                                    "write)" if head.get("store_resyncs") else "")))
        by_status = head.get("executors_by_status")
        lines.append(("executors", f"{head['executors']}" + (
            ": " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) if by_status else "") + (
            f" (the list: {head['executors_refused']})" if head.get("executors_refused") else "")))
        lines.append(("jobs", f"{head['queued']} queued" + (f", {head['running']} running" if "running" in head else "")
                      + f"; {head['jobs_in_memory']} in the head's memory"))
        recovered = head.get("recovered") or {}
        damaged = {label: recovered.get(k) for k, label in (("damaged", "jobs"), ("damaged_policies", "policies"),
                                                            ("damaged_executors", "executors"), ("damaged_keys", "keys"))
                   if recovered.get(k)}
        lines.append(("recovered", f"at start: {recovered.get('jobs', 0)} unfinished job(s)"
                      + (f", {recovered['elsewhere']} left to other head replicas" if recovered.get("elsewhere") else "")
                      + (", damaged records: " + ", ".join(f"{k} {_count(v)}" for k, v in damaged.items())
                         + " (`coopsched job forget ID` deletes a damaged job record)" if damaged else "")))
    if d["other_namespaces"]:
        lines.append(("also here", "Coopsched in namespace(s) " + ", ".join(d["other_namespaces"])))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def _count(v: Any) -> str:
    return str(len(v)) if isinstance(v, (list, tuple)) else str(v)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
