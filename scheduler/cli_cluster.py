"""``coopsched start``, ``stop`` and ``status``: the Ray cluster, this namespace's head on it, and what it holds.

``start`` starts the head (and, when no Ray runs here, a local cluster that outlives the command:
``scheduler.local_ray``); ``stop`` stops the head, the tracker and the workers (and that local cluster, once no
other namespace's Coopsched runs on it). ``status`` asks only what any caller may ask (``ping`` is open in
signed mode too), plus the executor list when the caller's key may read it; every part it cannot learn says why
instead of failing the command. Exit 0 when a head answers, 1 when none runs in the namespace (the output says
how to start one).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import Counter
from typing import Any

from policies.model import ResourceAmounts
from scheduler.cli_args import UsageError, _shown, _whole, key_of
from scheduler.cli_commands import EXIT_ERROR, EXIT_OK, _connect, _quiet_ray, emit, progress
from scheduler.sharing_limits import amounts_text


def cmd_start(args) -> int:
    import ray

    from policies.validation import InvalidRequest
    from scheduler.client import Client, _private_key
    from scheduler.client_local import NumCpusUnused
    from scheduler.head_auth import DEV_MODE_LABEL, AccessRefused
    from scheduler.identity import read_public_key
    from scheduler.local_ray import drop_stale_bootstrap, start_local_ray, stop_local_ray
    from scheduler.state_store import check_store_url
    if args.dev == (args.operator_key is not None):
        raise UsageError(f"start takes exactly one of --operator-key FILE_OR_PUBKEY (signed mode: every request is "
                         f"verified; make a key with `coopsched keys new --name operator`) or --dev (development "
                         f"mode: no keys, anyone who can reach the cluster can act as anyone), e.g. coopsched start "
                         f"--dev (got {'both' if args.dev else 'neither'})")
    if args.num_cpus is not None and args.address is not None:
        raise UsageError(f"--num-cpus sizes a new local Ray; with --address the cluster runs already, with the CPUs "
                         f"of its nodes (got --num-cpus {args.num_cpus} and --address {_shown(args.address)}): leave "
                         f"--num-cpus out, e.g. coopsched start --address {args.address} --dev")
    if args.num_cpus is not None:
        _whole(args.num_cpus, "--num-cpus", 1, 1_000_000, 4)
    if args.metrics_port is not None:
        _whole(args.metrics_port, "--metrics-port", 0, 65535, 9464)
    if args.auth_window is not None and (args.dev or not (math.isfinite(args.auth_window)
                                                          and 0 < args.auth_window <= 3600)):
        raise UsageError(f"--auth-window takes seconds, more than 0 and at most 3600, in signed mode (with "
                         f"--operator-key), e.g. --auth-window 60 (got {args.auth_window:g}"
                         f"{' with --dev' if args.dev else ''})")
    if args.borrowing_half_life is not None and not (math.isfinite(args.borrowing_half_life)
                                                     and args.borrowing_half_life >= 0):
        raise UsageError(f"--borrowing-half-life takes seconds, 0 or more (0: fair borrowing goes by what coops hold "
                         f"now only), e.g. --borrowing-half-life 3600 (got {args.borrowing_half_life:g})")
    config: dict[str, Any] = {"metrics_port": args.metrics_port} if args.metrics_port is not None else {}
    if args.borrowing_half_life is not None:
        config["borrowing_half_life_s"] = args.borrowing_half_life
    if args.operator_key is not None:
        try:
            config["operator_key"] = read_public_key(args.operator_key)
        except ValueError as exc:
            raise UsageError(f"--operator-key: {exc}") from None
        if args.auth_window is not None:
            config["auth_window_s"] = args.auth_window
    if args.store is not None:
        try:
            check_store_url(args.store)
        except InvalidRequest:
            raise UsageError(f"--store takes sqlite:///PATH, memory:// or redis://HOST:PORT/DB, e.g. --store "
                             f"sqlite:///state.db (got {args.store!r})") from None
    _private_key(key_of(args))  # (Client.local checks these too, but after the ray.init of --address below)
    started_ray = None  # every argument is checked: only now does anything connect
    _quiet_ray()
    if args.address is not None:
        ray.init(address=args.address, namespace=args.namespace, log_to_driver=False, logging_level=logging.WARNING)
    elif not ray.is_initialized():
        gone = drop_stale_bootstrap()
        if gone:
            progress(args, f"the Ray cluster last started on this machine, at {gone}, is gone")
        try:  # the cluster running on this machine (or $RAY_ADDRESS's)
            ray.init(address="auto", namespace=args.namespace, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError:  # none: start one that outlives this command (a Ray that ray.init starts here
            # would stop when it returns: scheduler.local_ray), stopped by `coopsched stop`
            if os.environ.get("RAY_ADDRESS"):  # the user named a cluster: not one to stand in for with another
                raise ConnectionError(f"no Ray cluster answers at $RAY_ADDRESS ({os.environ['RAY_ADDRESS']}); start "
                                      "it, or unset RAY_ADDRESS to have `coopsched start` start a local one") from None
            progress(args, "no Ray cluster runs on this machine: starting one (`ray start --head`) ...")
            started_ray = start_local_ray(args.num_cpus)  # (joined as "auto": Ray sends its token to a cluster
            ray.init(address="auto", namespace=args.namespace, log_to_driver=False,  # it found, not to a named one)
                     logging_level=logging.WARNING)
    try:
        client = Client.local(num_cpus=args.num_cpus, namespace=args.namespace, store=args.store, key=key_of(args),
                              auth="dev" if args.dev else "signed", **config)
    except NumCpusUnused as exc:  # (the only way --num-cpus reaches it: not with --address)
        flag = "--dev" if args.dev else f"--operator-key {_shown(args.operator_key)}"
        raise UsageError(f"--num-cpus sizes a new local Ray, but a Ray cluster runs already (this machine's, or "
                         f"$RAY_ADDRESS's), with {exc.cluster_cpus:g} CPUs, and the head would join it as it is "
                         f"(got --num-cpus {args.num_cpus}); nothing was started: leave --num-cpus out to start the "
                         f"head on that cluster, e.g. coopsched start {flag}, or stop it first (`ray stop`, which "
                         f"stops whatever runs on it) to start a new one of {args.num_cpus} CPUs") from None
    except BaseException:
        if started_ray is not None:  # the head did not start: the cluster started for it goes too
            ray.shutdown()
            stop_local_ray(started_ray)
        raise
    try:
        info = client._call("ping")
    except AccessRefused:  # signed mode, and this command was not given the operator's private key
        info = {"store": args.store or "(default)"}
    mode = "development mode" if client.dev_mode else "signed mode"
    address = ray.get_runtime_context().gcs_address
    emit(args, {"namespace": client.namespace, "auth": "dev" if client.dev_mode else "signed", "ray_address": address,
                "started_ray": started_ray is not None, **info},
         lambda d: (f"Coopsched head running in Ray namespace {client.namespace!r} ({mode}), state in "
                    f"{info['store']}, on the Ray cluster at {address}"
                    + (" (started now: `coopsched stop` stops it too)" if started_ray else "")
                    + "; stop it with `coopsched stop`"
                    + (f"\n{DEV_MODE_LABEL}" if client.dev_mode else "")))
    if client.dev_mode != args.dev:  # a head already ran, in the other mode: nothing was set up as asked
        print(f"coopsched: a head was already running in {mode} in namespace {client.namespace!r}; it keeps "
              f"its mode: `coopsched stop`, then start again", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_stop(args) -> int:
    import ray

    from scheduler.client import shutdown
    from scheduler.local_ray import started_here, stop_local_ray
    try:
        _connect(args)  # not a Client: the head may be gone while the tracker or workers still run
    except ConnectionError:
        if args.address is not None:  # the cluster named is not there: say so
            raise
        emit(args, {"stopped": [], "ray_stopped": False}, lambda d: "stopped: nothing was running (no Ray cluster "
             "runs on this machine)")  # (a second stop finds what the first stopped gone: that is its aim)
        return EXIT_OK
    stopped = shutdown(args.namespace)
    address = ray.get_runtime_context().gcs_address
    ray_stopped, others = False, []
    if started_here(address) is not None:  # the local Ray `coopsched start` started: it goes too, unless another
        others = sorted({a.partition("/")[0] for a in _coopsched_actors(besides=args.namespace)})  # namespace's
        if not others:  # Coopsched runs on it
            ray.shutdown()
            ray_stopped = stop_local_ray(address)
    emit(args, {"stopped": stopped, "ray_stopped": ray_stopped},
         lambda d: "stopped: " + (", ".join(stopped) if stopped else "nothing was running")
         + (f"; and the local Ray cluster at {address} that `coopsched start` started" if ray_stopped else "")
         + (f"; the local Ray cluster at {address} keeps running for Coopsched in namespace(s) {', '.join(others)} "
            "(`coopsched --namespace NS stop` stops each)" if others else ""))
    return EXIT_OK


def _coopsched_actors(besides: str) -> list[str]:
    """The Coopsched actors (head, tracker, workers) on the cluster in namespaces other than ``besides`` (whose
    actors were just killed: the cluster may list them a moment longer)."""
    import ray

    from scheduler.names import HEAD_NAME, TRACKER_NAME, WORKER_PREFIX
    return [f"{a.get('namespace')}/{a['name']}" for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") != besides
            and (a["name"] in (HEAD_NAME, TRACKER_NAME) or a["name"].startswith(WORKER_PREFIX))]


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


def _sharing_phrase(coop: str, row: dict[str, Any]) -> str:
    """One coop's part of the status's sharing line: what it lends and borrows now, of what limits."""
    def share(value: float, amounts: list[float], limit: float | dict[str, float] | None) -> str:
        if isinstance(limit, dict):  # amounts per resource: what is held of those, against them
            named = ResourceAmounts.model_validate(limit)
            return f"{amounts_text(tuple(amounts), named)} (limit {amounts_text(named.caps(), named)})"
        return f"{value:.0%}" + (f" (limit {limit:.0%})" if limit is not None else "")
    parts = []
    if row["lent"] or row["lending_limit"] is not None:
        parts.append(f"lends {share(row['lent'], row['lent_amounts'], row['lending_limit'])} of its executors")
    if row["borrowed"] or row["borrowing_limit"] is not None or row["borrowed_before"]:
        parts.append(f"borrows {share(row['borrowed'], row['borrowed_amounts'], row['borrowing_limit'])}"
                     + ("" if isinstance(row["borrowing_limit"], dict) else " of the fleet")
                     + (f", {row['borrowed_before']:.0%} on average lately" if row["borrowed_before"] else ""))
    return f"{coop} " + " and ".join(parts)


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
        if head.get("sharing"):
            lines.append(("sharing", "; ".join(_sharing_phrase(coop, row) for coop, row in head["sharing"].items())))
        recovered = head.get("recovered") or {}
        damaged = {label: recovered.get(k) for k, label in (("damaged", "jobs"), ("damaged_policies", "policies"),
                                                            ("damaged_executors", "executors"), ("damaged_keys", "keys"))
                   if recovered.get(k)}
        lines.append(("recovered", f"at start: {recovered.get('jobs', 0)} unfinished job(s)"
                      + (f", {recovered['elsewhere']} left to other head replicas" if recovered.get("elsewhere") else "")
                      + (f", the borrowing history of {recovered['borrowing']} coop(s)" if recovered.get("borrowing")
                         else "")
                      + (", damaged records: " + ", ".join(f"{k} {_count(v)}" for k, v in damaged.items())
                         + " (`coopsched job forget ID` deletes a damaged job record)" if damaged else "")
                      + ("; the stored borrowing history could not be read: started afresh"
                         if recovered.get("damaged_borrowing") else "")))
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
