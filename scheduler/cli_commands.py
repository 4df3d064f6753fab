"""What each ``coopsched`` command does. The parser and exit codes are in ``scheduler.cli``."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scheduler.cli_args import (UsageError, _amounts, _check_diff, _json_data, _limits, _pairs, _version, _whole,
                                key_of)
from scheduler.executor_spec import MAX_DISPATCH_AHEAD
from scheduler.tables import table

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REJECTED, EXIT_FORBIDDEN = 0, 1, 2, 3, 4
DRY_RUN_JOBS = 100  # `policy set --dry-run`'s default --last


def _token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_ray() -> None:
    """Leave out Ray's notice, on every command that connects, that its token authentication is on: nothing to act
    on (the cluster is protected). Ray's other warnings still show (one saying it is off among them)."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_token_notice)


def _connect(args) -> None:
    import ray

    from scheduler.local_ray import drop_stale_bootstrap
    _quiet_ray()
    if not ray.is_initialized():
        if args.address is None:
            drop_stale_bootstrap()  # (else ray.init waits for ever on a cluster that is gone)
        try:
            ray.init(address=args.address or "auto", namespace=args.namespace, log_to_driver=False,
                     logging_level=logging.WARNING)  # (not Ray's "Connecting to existing Ray cluster" lines)
        except ConnectionError:
            raise ConnectionError("no running Ray cluster found; start one with `coopsched start` "
                                  "(or pass --address HOST:PORT)") from None


def client_for(args):
    """A client of the running head. Commands check their own arguments before calling this, so a
    wrong command line is a usage error (exit 2) whether or not a cluster runs."""
    from scheduler.client import Client, _private_key
    key = _private_key(key_of(args))  # a bad --key (or $COOPSCHED_KEY) is bad input too, cluster or not
    _connect(args)
    return Client(namespace=args.namespace, key=key, _connect=False)


def emit(args, data: Any, render) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else render(data))


def progress(args, message: str) -> None:
    if not args.json:
        print(message, file=sys.stderr, flush=True)


def _usage_rows(records) -> str:
    return table(["coop", "member", "period", "cpu-h", "quota", "gpu-h", "credits", "reserved cpu-h", "running",
                  "tasks"],
                 [(u["coop_id"], u["member"], u["period"], u["cpu_hours"],
                   (u.get("quota") or {}).get("cpu_hours_per_month"), u["gpu_hours"], u["credits"],
                   u["reserved_cpu_hours"], u["running"], u["tasks_completed"]) for u in records])


def _coop_usage_rows(u: dict) -> str:
    quota = u.get("quota") or {}
    return table(["coop", "period", "of", "used", "reserved", "budget"],
                 [(u["coop_id"], u["period"], what, u[used], u[reserved],
                   "none" if quota.get(limit) is None else quota[limit])
                  for what, used, reserved, limit in (
                      ("cpu-h", "cpu_hours", "reserved_cpu_hours", "cpu_hours_per_month"),
                      ("gpu-h", "gpu_hours", "reserved_gpu_hours", "gpu_hours_per_month"),
                      ("credits", "credits", "reserved_credits", "credits_per_month"))])


# ---------------------------------------------------------------------------- demo, start, stop, bench
def cmd_demo(args) -> int:
    if args.simulated:
        from scheduler.simulated_demo import run as run_simulated
        return run_simulated()
    from scheduler.demo import run
    return run()


def cmd_bench(args) -> int:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "placement_latency.py"
    if not script.exists():
        print(f"coopsched: the benchmarks are not installed with the package; run them from a checkout "
              f"(expected {script})", file=sys.stderr)
        return EXIT_ERROR
    command = [sys.executable, "-u", str(script)] + (["--quick"] if args.quick else [])
    progress(args, f"running {' '.join(command[2:])} (progress below)")
    return subprocess.call(command)


# ---------------------------------------------------------------------------- policies
def cmd_policy(args) -> int:
    from policies.loader import load_policy
    if args.action == "validate":
        policy = load_policy(args.file)
        emit(args, {"file": args.file, "valid": True, "coop_id": policy.coop_id},
             lambda d: f"{args.file}: a valid policy for coop {policy.coop_id} ({len(policy.rules)} rules, "
                       f"{policy.enforcement_mode.value})")
        return EXIT_OK
    policy = load_policy(args.file) if args.action == "set" or (args.action == "diff" and args.file) else None
    data = _json_data(args.data) if args.action == "mgmt" else None
    if args.action == "set" and args.last is not None and not args.dry_run:  # (it sizes the dry run only)
        raise UsageError(f"--last says how many recent jobs --dry-run replays (got --last {args.last} without "
                         f"--dry-run: the policy would be installed); add --dry-run or leave --last out, e.g. "
                         f"coopsched policy set {args.file} --dry-run --last {args.last}")
    if args.action == "set" and args.dry_run:
        from scheduler.head_admin import MAX_SHADOW_JOBS
        args.last = _whole(DRY_RUN_JOBS if args.last is None else args.last, "--last", 1, MAX_SHADOW_JOBS, 100)
    if args.action == "diff":
        _check_diff(args, policy)
    if args.action == "rollback":
        _version(args.version, "VERSION", "coopsched policy rollback timebank:seattle 2")
    client = client_for(args)
    if args.action == "set":
        assert policy is not None
        if args.dry_run:
            outcomes = client.shadow_policy(policy, args.last)
            changed = [o for o in outcomes if o["change"] != "unchanged"]
            emit(args, outcomes, lambda rows: (
                f"dry run: the last {len(rows)} job(s) of coop {policy.coop_id} replayed under {args.file}; "
                f"{len(changed)} would change (nothing was changed)\n"
                + table(["job", "member", "change", "before", "after"],
                        [(o["task_id"][:12], o["member"], o["change"], o["before"], o["after"]) for o in changed],
                        max_width=60)))
            return EXIT_OK
        policy = client.set_policy(policy)
        version = client.policy_history(policy.coop_id)[-1]["version"]
        emit(args, {"coop_id": policy.coop_id, "version": version}, lambda d: (
            f"policy for coop {policy.coop_id} set: version {version} "
            f"({len(policy.rules)} rules, {policy.enforcement_mode.value})"))
    elif args.action == "show":
        policy = client.get_policy(args.coop)
        if policy is None:
            print(f"coopsched: coop {args.coop} has no policy; set one with `coopsched policy set FILE`",
                  file=sys.stderr)
            return EXIT_ERROR
        print(policy.model_dump_json(indent=2))
    elif args.action == "list":
        emit(args, [p.model_dump(mode="json") for p in client.list_policies()], lambda rows: table(
            ["coop", "mode", "rules", "members with own quota", "description"],
            [(p["coop_id"], p["enforcement_mode"], len(p["rules"]), len(p["member_quotas"]), p["description"])
             for p in rows], max_width=50))
    elif args.action == "remove":
        removed = client.remove_policy(args.coop)
        emit(args, {"coop_id": args.coop, "removed": removed}, lambda d: (
            f"policy for coop {args.coop} {'removed (its history is kept)' if removed else 'did not exist'}"))
    elif args.action == "history":
        emit(args, client.policy_history(args.coop), lambda rows: table(
            ["version", "author", "at (UTC)", "predecessor", "active", "note"],
            [(v["version"], v["author"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["at"])), v["predecessor"],
              "yes" if v["active"] else "", "(damaged: cannot be read)" if v.get("damaged") else
              v["note"] or ("(removed)" if v["policy"] is None else "")) for v in rows]))
    elif args.action == "rollback":
        policy = client.rollback_policy(args.coop, args.version)
        emit(args, policy.model_dump(mode="json"), lambda d: (
            f"coop {policy.coop_id} rolled back to the content of version {args.version} (as a new version)"))
    elif args.action == "mgmt":
        answer = client.plugin_management(args.coop, args.rule, args.mgmt_action, data)
        emit(args, answer, lambda d: json.dumps(d, indent=2, default=str))
        return EXIT_OK if answer.get("status") != "error" else EXIT_ERROR
    elif args.action == "diff":
        if policy is not None:
            changes = client.diff_policy(policy.coop_id, args.file, a=args.base)
        else:
            changes = client.diff_policy(args.coop, a=args.base, b=args.to)
        emit(args, changes, lambda rows: "no changes" if not rows else table(
            ["path", "change", "from", "to"],
            [(c["path"], c["op"], json.dumps(c["old"]), json.dumps(c["new"])) for c in rows], max_width=60))
    return EXIT_OK


# ---------------------------------------------------------------------------- quotas
def cmd_quota(args) -> int:
    action = args.action
    limits = _limits(args) if action in ("limit", "default-limit") else {}
    amounts = _amounts(args) if action == "set" else {}
    client = client_for(args)
    if action == "list":
        emit(args, [u.model_dump(mode="json") for u in client.members(args.coop)], _usage_rows)
        return EXIT_OK
    if action == "coop":
        emit(args, client.coop_usage(args.coop).model_dump(mode="json"), _coop_usage_rows)
        return EXIT_OK
    if action == "show":
        record = client.get_quota(args.coop, args.member)
    elif action == "reset":
        record = client.reset_quota(args.coop, args.member)
    elif action == "set":
        record = client.set_quota(args.coop, args.member, **amounts)
    elif action == "limit":
        record = client.update_limit(args.coop, args.member, **limits)
    elif action == "default-limit":
        policy = client.update_default_limit(args.coop, **limits)
        emit(args, policy.model_dump(mode="json"), lambda d: (
            f"coop {args.coop}: default quota is now {policy.default_quota.model_dump_json()}"))
        return EXIT_OK
    elif action == "whitelist":
        record = (client.add_whitelist if args.op == "add" else client.remove_whitelist)(args.coop, args.member)
    elif action == "clear-all":
        cleared = client.clear_all(args.coop)
        emit(args, {"cleared": cleared}, lambda d: (
            f"coop {args.coop}: this month's usage cleared for {len(cleared)} member(s)"))
        return EXIT_OK
    else:  # pragma: no cover - argparse restricts the choices
        raise UsageError(action)
    emit(args, record.model_dump(mode="json"), lambda d: _usage_rows([d]))
    return EXIT_OK


# ---------------------------------------------------------------------------- executors
def cmd_executor(args) -> int:
    if args.action == "join":
        try:
            trust = float(args.trust)
        except ValueError:
            raise UsageError(f"--trust takes a number from 0 to 1, e.g. --trust 0.8 (got {args.trust!r})") from None
        try:
            ahead: int | str = "auto" if args.dispatch_ahead == "auto" else int(args.dispatch_ahead)
        except ValueError:
            raise UsageError(f"--dispatch-ahead takes a whole number from 0 to {MAX_DISPATCH_AHEAD} or auto, e.g. "
                             f"--dispatch-ahead 2 (got {args.dispatch_ahead!r})") from None
        capabilities = _pairs(args.capability, "--capability", "hipaa-compliant=1.2")
        from policies.validation import parse
        from scheduler.executor_spec import ExecutorSpec
        from scheduler.identity import load_private_key
        parse(ExecutorSpec, {"executor_id": args.id, "coop_id": args.coop, "region": args.region or "unset",
                             "resources": {"cpus": 1}, "capabilities": capabilities, "trust": trust,
                             "price_cpu_hour": args.price_cpu_hour, "price_gpu_hour": args.price_gpu_hour,
                             "open_to": args.open_to or [], "dispatch_ahead": 0 if ahead == "auto" else ahead},
              what="executor")  # (region and resources come from the node once connected)
        try:
            executor_key = load_private_key(args.executor_key) if args.executor_key is not None else None
        except ValueError as exc:
            raise UsageError(f"--executor-key: {exc}") from None
    if args.action == "set-trust" and not 0 <= args.trust <= 1:  # (NaN is neither)
        raise UsageError(f"set-trust takes a trust from 0 to 1, e.g. 0.8 (got {args.trust})")
    client = client_for(args)
    if args.action == "join":
        spec = client.register_executor(args.id, coop=args.coop, region=args.region, capabilities=capabilities,
                                        trust=trust, price_cpu_hour=args.price_cpu_hour,
                                        price_gpu_hour=args.price_gpu_hour, open_to=args.open_to or (),
                                        dispatch_ahead=ahead, executor_key=executor_key)
        emit(args, spec.model_dump(mode="json"), lambda s: f"executor {s['executor_id']} joined coop "
             f"{s['coop_id']} in {s['region']} with {s['resources']['cpus']:g} CPUs, {s['resources']['gpus']:g} GPUs")
    elif args.action == "list":
        emit(args, client.executors(), lambda rows: table(
            ["executor", "coop", "region", "status", "running", "cpus", "gpus", "trust", "ahead", "capabilities"],
            [(e["executor_id"], e["coop_id"], e["region"], e["status"],
              f"{e['running']} (+{e['held']} held)" if e.get("held") else e["running"], e["resources"]["cpus"],
              e["resources"]["gpus"], e["trust"], _ahead(e),
              ", ".join(f"{k}={v}" for k, v in e["capabilities"].items())) for e in rows]))
    elif args.action == "drain":
        client.drain(args.id)
        emit(args, {"executor_id": args.id, "status": "draining"},
             lambda d: f"executor {args.id} is draining: running tasks finish, no new ones start")
    elif args.action == "remove":
        lost = client.remove_executor(args.id)
        emit(args, {"executor_id": args.id, "requeued": lost}, lambda d: f"executor {args.id} removed" + (
            f"; {len(lost)} running task(s) go back to the queue" if lost else ""))
    elif args.action == "set-trust":
        spec = client.set_trust(args.id, args.trust)
        emit(args, spec.model_dump(mode="json"), lambda d: f"executor {spec.executor_id}: trust {spec.trust:g}")
    return EXIT_OK


def _ahead(executor: dict) -> str:
    """An executor's rounds ahead as the list shows them: ``2``, or ``auto (now 4)`` when the head tunes them."""
    rounds = executor.get("dispatch_ahead", 0)
    return f"auto (now {rounds})" if executor.get("dispatch_ahead_auto") else str(rounds)


# ---------------------------------------------------------------------------- keys
def cmd_keys(args) -> int:
    from scheduler.identity import generate_key, key_id_of, public_key_b64, read_public_key, save_key_pair
    if args.action == "new":
        if not args.name or "/" in args.name or args.name.startswith("."):
            raise UsageError(f"--name takes a file name without a directory, e.g. --name alice (got {args.name!r})")
        for existing in (Path(args.out) / f"{args.name}.key", Path(args.out) / f"{args.name}.pub"):
            if existing.exists() or existing.is_symlink():  # a public key alone is not overwritten either
                raise UsageError(f"--name {args.name}: {existing} exists; a key file (private or public) is never "
                                 f"overwritten: choose another --name or --out, e.g. --name {args.name}-2, or move "
                                 f"{existing} away first")
        key = generate_key()
        try:
            private, public = save_key_pair(key, args.out, args.name)
        except FileExistsError:
            if not Path(args.out).is_dir():  # mkdir of a path that is a file
                raise UsageError(f"--out {args.out}: not a directory; give a directory you can write, e.g. "
                                 "--out ~/.coopsched") from None
            raise UsageError(f"--name {args.name}: {Path(args.out) / (args.name + '.key')} exists; a key file is "
                             f"never overwritten: choose another --name or --out, e.g. --name {args.name}-2") \
                from None  # (made since the check above)
        except OSError as exc:  # --out under a file, unwritable, ...
            raise UsageError(f"--out {args.out}: cannot write the key pair there ({exc.strerror or exc}); "
                             "give a directory you can write, e.g. --out ~/.coopsched") from None
        pub = public_key_b64(key)
        emit(args, {"private_key_file": str(private), "public_key_file": str(public), "public_key": pub,
                    "key_id": key_id_of(pub)}, lambda d: (
            f"{pub}\nwrote {private} (private, mode 0600: keep it secret) and {public}; key id {d['key_id']}\n"
            f"an admin registers it with: coopsched keys add --coop COOP --role member --id YOUR_ID {pub}"))
        return EXIT_OK
    if args.action == "add":
        try:
            pub = read_public_key(args.public_key)
        except ValueError as exc:
            raise UsageError(f"PUBKEY: {exc}") from None
    client = client_for(args)
    if args.action == "add":
        added = client.add_key(pub, coop=args.coop, role=args.role, id=args.id)
        emit(args, added, lambda d: f"key {d['key_id']} registered: {d['role']} {d['subject']} of coop {d['coop_id']}")
    elif args.action == "list":
        emit(args, client.list_keys(args.coop), lambda rows: table(
            ["key id", "coop", "role", "id", "public key"],
            [(k["key_id"], k["coop_id"], k["role"], k["subject"], k["public_key"]) for k in rows]))
    elif args.action == "remove":
        removed = client.remove_key(args.key_id)
        emit(args, {"key_id": args.key_id, "removed": removed}, lambda d: (
            f"key {args.key_id} {'removed' if removed else 'was not registered'}"))
        return EXIT_OK if removed else EXIT_ERROR
    elif args.action == "whoami":
        me = client.whoami()
        emit(args, me, lambda d: "development mode: requests are not signed" if d["dev_mode"] else (
            f"{d['principal']['role']} {d['principal']['subject']} of coop {d['principal']['coop_id']} "
            f"(key {d['principal']['key_id']})"))
    return EXIT_OK


# ---------------------------------------------------------------------------- jobs
def cmd_job(args) -> int:
    if args.action == "submit":
        from scheduler.client import Client
        fn, call_args = _call_of(args)
        Client._task(fn, call_args, {}, **_options(args))  # the task's own checks (exit 2), before connecting
        if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout >= 0):
            raise UsageError(f"--timeout takes seconds, a finite number >= 0, e.g. --timeout 60 (got {args.timeout})")
        if args.timeout is not None and not args.wait:  # (it bounds the wait only: without one it did nothing)
            raise UsageError(f"--timeout bounds --wait, how long to follow the job (got --timeout {args.timeout:g} "
                             f"without --wait); add --wait or leave --timeout out, e.g. coopsched job submit "
                             f"{args.target} --wait --timeout {args.timeout:g} ...")
        return _submit(args, client_for(args), fn, call_args)
    client = client_for(args)
    if args.action == "list":
        jobs = client.jobs(args.coop, args.member, args.status)
        emit(args, [j.model_dump(mode="json") for j in jobs], lambda rows: table(
            ["job", "coop", "member", "state", "executor", "reason"],
            [(j["task_id"], j["coop_id"], j["member"], j["state"], j["executor_id"], j["reason"]) for j in rows]))
    elif args.action == "queue":
        positions = client.queue(args.coop, args.member, args.limit)
        emit(args, [p.model_dump(mode="json") for p in positions], lambda rows: table(
            ["#", "job", "coop", "member", "priority", "effective", "fair share", "waiting", "reason"],
            [(p["position"], p["task_id"], p["coop_id"], p["member"], p["priority"], f"{p['effective_priority']:g}",
              f"{p['fair_share']:.0%}", _waited(time.time() - p["submitted_at"]), p["reason"]) for p in rows])
            if rows else "no job waits")
    elif args.action == "status":
        status = client.job(args.id).status()
        emit(args, status.model_dump(mode="json"), lambda s: "\n".join(
            [f"{s['task_id']}: {s['state']} ({s['reason']})"] + _attempts_line(s)
            + [f"  {time.strftime('%H:%M:%S', time.gmtime(e['at']))} {e['state']:<9} {e['message']}"
               for e in s["history"]]))
    elif args.action == "cancel":
        state = client.job(args.id).cancel()
        emit(args, {"task_id": args.id, "state": state}, lambda d: f"{args.id}: {state}")
    elif args.action == "explain":
        emit(args, client.job(args.id).explain(), lambda d: d["summary"])
    elif args.action == "forget":  # (a refusal is an error: on stderr, exit 1, unless --json asked for the answer)
        answer = client.forget_damaged_job(args.id)
        if answer["forgotten"] or args.json:
            emit(args, answer, lambda d: d["message"])
        else:
            print(f"coopsched: {answer['message']}", file=sys.stderr)
        return EXIT_OK if answer["forgotten"] else EXIT_ERROR
    return EXIT_OK


def _waited(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _attempts_line(s: dict) -> list[str]:
    """``job status``'s line on where the job ran and what it was charged, once it was placed."""
    if not s["attempts"]:
        return []
    stopped = f" ({s['preemptions']} stopped to make room: an owner's reclaim or a task of higher priority)" \
        if s["preemptions"] else ""
    where = f", last on {s['executor_id']}" if s["executor_id"] else ""  # (a waiting job restored from a store: none)
    lines = [f"  attempts {s['attempts']}{stopped}{where}; charged {s['charged_cpu_hours']:.4g} CPU-h, "
             f"{s['charged_gpu_hours']:.4g} GPU-h, {s['charged_credits']:.4g} credits"]
    checkpoint = s.get("checkpoint")  # (a head of an earlier release sends none)
    if checkpoint:
        lines.append(f"  checkpoint saved by attempt {checkpoint['attempt']}, {checkpoint['bytes']:,} bytes, "
                     f"{_waited(time.time() - checkpoint['saved_at'])} ago: a next attempt goes on from it")
    return lines


def _call_of(args) -> tuple[Any, list]:
    """The function ``job submit`` names (MODULE:FUNCTION) and its ``--args``."""
    module_name, _, fn_name = args.target.partition(":")
    if not module_name or not fn_name or module_name.startswith("."):  # (a relative module: TypeError)
        raise UsageError(f"job submit takes MODULE:FUNCTION, e.g. math:factorial (got {args.target!r})")
    # The module is looked for in the current directory first, as `python -m` would: the `coopsched` console
    # script's sys.path starts at its own bin directory. The directory is on sys.path for this import only.
    try:
        here = os.getcwd()
    except OSError:  # the current directory was removed
        here = None
    added = here is not None and here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
        if here is not None:
            _by_value_if_only_here(module_name, here)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot find {args.target}: {exc}; MODULE:FUNCTION takes a module importable from the "
                         f"current directory or the installed packages and a function in it, e.g. "
                         f"math:factorial") from None
    except Exception as exc:  # noqa: BLE001  # its own code raised on import (a SyntaxError, a NameError, ...)
        raise UsageError(f"cannot import {args.target}: importing {module_name} raised {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}; MODULE:FUNCTION takes a module that imports "
                         f"cleanly and a function in it, e.g. math:factorial") from None
    finally:
        if added:
            sys.path.remove(here)
    try:
        call_args = json.loads(args.args) if args.args else []
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args takes a JSON list, e.g. --args '[10]' ({exc.msg})") from None
    if not isinstance(call_args, list):
        raise UsageError(f"--args takes a JSON list, e.g. --args '[10]' (got {args.args!r})")
    return fn, call_args


def _by_value_if_only_here(module_name: str, here: str) -> None:
    """A module found in the current directory and nowhere else on the path travels with the job, by value:
    cloudpickle names an importable module's function by reference, and the executor's task, in a process
    whose path has no such directory (Ray gives it the sys.path of ``coopsched executor join``'s own
    directory), could not import it. (What the module itself imports from here still must be importable
    there.)"""
    import importlib.machinery

    from ray import cloudpickle
    top = module_name.partition(".")[0]
    module = sys.modules.get(top)
    if module is None:
        return
    home = Path(here).resolve()
    file = getattr(module, "__file__", None)
    if file is not None:
        origin = Path(file).resolve()
        found_here = (origin.parent.parent if origin.name == "__init__.py" else origin.parent) == home
    else:  # a namespace package
        found_here = any(Path(p).resolve().parent == home for p in getattr(module, "__path__", ()))
    elsewhere = [p for p in sys.path if isinstance(p, str) and p not in ("", ".") and Path(p).resolve() != home]
    if found_here and importlib.machinery.PathFinder.find_spec(top, elsewhere) is None:
        cloudpickle.register_pickle_by_value(module)


def _options(args) -> dict[str, Any]:
    return {"coop": args.coop, "member": args.member, "priority": args.priority, "tags": args.tag or (),
            "max_runtime_s": args.max_runtime, "resources": {"cpus": args.cpus, "gpus": args.gpus},
            "max_retries": args.max_retries, "stop_grace_s": args.stop_grace}


def _submit(args, client, fn, call_args: list) -> int:
    handle = client.submit(fn, *call_args, **_options(args))
    for warning in handle.warnings:
        progress(args, f"warning: {warning.message}")
    if not args.wait:
        emit(args, {"task_id": handle.id}, lambda d: d["task_id"])
        return EXIT_OK
    seen = None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        status = handle.status()
        if (status.state.value, status.reason) != seen:
            seen = (status.state.value, status.reason)
            progress(args, f"{handle.id[:12]}: {status.state.value}: {status.reason}")
        if status.state.finished or status.state.value == "running":
            break
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {handle.id} still {status.state.value} after {args.timeout} s")
        time.sleep(0.2)
    value = handle.result(timeout=None if deadline is None else max(0.1, deadline - time.monotonic()))
    emit(args, {"task_id": handle.id, "result": value}, lambda d: f"{d['result']!r}")
    return EXIT_OK


# ---------------------------------------------------------------------------- change log, audit
def cmd_changes(args) -> int:
    _whole(args.limit, "--limit", 0, 1_000_000, 50)
    client = client_for(args)
    emit(args, client.changes(args.coop, args.limit), lambda rows: table(
        ["seq", "at (UTC)", "coop", "kind", "actor", "detail"],
        [(c["seq"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c["at"])), c["coop_id"], c["kind"], c["actor"],
          json.dumps(c["detail"])) for c in rows], max_width=60))
    return EXIT_OK


def cmd_audit(args) -> int:
    _whole(args.limit, "--limit", 0, 1_000_000, 50)
    if args.action != "list" and args.session is None or args.action == "get" and args.seq is None:
        raise UsageError(f"audit {args.action} takes SESSION (coop/member){' and SEQ' if args.action == 'get' else ''}"
                         f", e.g. coopsched audit {args.action} timebank:seattle/did:icn:alice"
                         f"{' 3' if args.action == 'get' else ''}")
    client = client_for(args)
    if args.action == "list":
        rows = client.audit("list", args.session, None, limit=args.limit)
    elif args.action in ("get", "latest"):
        record = client.audit(args.action, args.session, args.seq)
        if record is None:
            print(f"coopsched: no audit record for session {args.session}", file=sys.stderr)
            return EXIT_ERROR
        rows = [record]
    else:
        count = client.audit("delete", args.session, args.seq)
        emit(args, {"deleted": count}, lambda d: f"deleted {count} audit record(s)")
        return EXIT_OK
    emit(args, rows, lambda rs: table(
        ["session", "seq", "at (UTC)", "task", "state", "cpu-s"],
        [(r["session_id"], r["seq_no"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["timestamp"])),
          r["task"].get("name") or r["task"]["task_id"][:12], r["result"].get("state"), r["usage"].get("cpu_seconds"))
         for r in rs]))
    return EXIT_OK
