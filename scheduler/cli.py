"""The ``coopsched`` command.

Exit codes: 0 ok, 1 error, 2 usage error, 3 refused by policy. Tables by default,
``--json`` for scripts; errors go to stderr and say how to fix them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from scheduler.tables import table

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3


class UsageError(Exception):
    pass


def _client(args):
    from scheduler.client import Client
    return Client(address=args.address)


def _emit(args, data: Any, render) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render(data))


def _capabilities(pairs: list[str]) -> dict[str, str]:
    caps = {}
    for pair in pairs or ():
        name, sep, version = pair.partition("=")
        if not sep or not name or not version:
            raise UsageError(f"--capability takes NAME=VERSION, e.g. --capability hipaa-compliant=1.2 (got {pair!r})")
        caps[name] = version
    return caps


# ---------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    if args.simulated:
        from scheduler.simulated_demo import run as run_simulated
        return run_simulated()
    from scheduler.demo import run
    return run()


def cmd_start(args) -> int:
    import ray

    from scheduler.client import Client
    if args.address:
        ray.init(address=args.address, namespace="coopsched", log_to_driver=False)
    client = Client.local(num_cpus=args.num_cpus)
    print(f"Coopsched head running in Ray namespace {client.namespace!r}; "
          "stop it with `coopsched stop`" + ("" if args.address else " (and `ray stop` for the local Ray)"))
    return EXIT_OK


def cmd_stop(args) -> int:
    import ray

    from scheduler.client import shutdown
    ray.init(address=args.address or "auto", namespace="coopsched", log_to_driver=False)
    stopped = shutdown()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def cmd_executor(args) -> int:
    client = _client(args)
    if args.action == "join":
        spec = client.register_executor(args.id, coop=args.coop, region=args.region,
                                        capabilities=_capabilities(args.capability), trust=args.trust,
                                        price_cpu_hour=args.price_cpu_hour, price_gpu_hour=args.price_gpu_hour,
                                        open_to=args.open_to or ())
        _emit(args, spec.model_dump(mode="json"), lambda s: f"executor {s['executor_id']} joined coop "
              f"{s['coop_id']} in {s['region']} with {s['resources']['cpus']:g} CPUs, {s['resources']['gpus']:g} GPUs")
    elif args.action == "list":
        _emit(args, client.executors(), lambda rows: table(
            ["executor", "coop", "region", "status", "running", "cpus", "gpus", "trust", "capabilities"],
            [(e["executor_id"], e["coop_id"], e["region"], e["status"], e["running"], e["resources"]["cpus"],
              e["resources"]["gpus"], e["trust"], ", ".join(f"{k}={v}" for k, v in e["capabilities"].items()))
             for e in rows]))
    elif args.action == "drain":
        client.drain(args.id)
        print(f"executor {args.id} is draining: running tasks finish, no new ones start")
    elif args.action == "remove":
        lost = client.remove_executor(args.id)
        print(f"executor {args.id} removed" + (f"; {len(lost)} running task(s) go back to the queue" if lost else ""))
    return EXIT_OK


def cmd_policy(args) -> int:
    from policies.loader import load_policy
    if args.action == "validate":
        policy = load_policy(args.file)
        print(f"{args.file}: valid policy for coop {policy.coop_id} ({len(policy.rules)} rules, "
              f"{policy.enforcement_mode.value})")
        return EXIT_OK
    client = _client(args)
    if args.action == "set":
        policy = client.set_policy(load_policy(args.file))
        print(f"policy for coop {policy.coop_id} set ({len(policy.rules)} rules, {policy.enforcement_mode.value})")
    elif args.action == "show":
        policy = client.get_policy(args.coop)
        if policy is None:
            print(f"coop {args.coop} has no policy; set one with `coopsched policy set FILE`", file=sys.stderr)
            return EXIT_ERROR
        print(policy.model_dump_json(indent=2))
    elif args.action == "list":
        policies = client.list_policies()
        _emit(args, [p.model_dump(mode="json") for p in policies], lambda rows: table(
            ["coop", "mode", "rules", "members with own quota", "version"],
            [(p["coop_id"], p["enforcement_mode"], len(p["rules"]), len(p["member_quotas"]), p["version"])
             for p in rows]))
    elif args.action == "remove":
        removed = client.remove_policy(args.coop)
        print(f"policy for coop {args.coop} {'removed' if removed else 'did not exist'}")
    return EXIT_OK


def cmd_job(args) -> int:
    client = _client(args)
    if args.action == "submit":
        module_name, _, fn_name = args.target.partition(":")
        if not fn_name:
            raise UsageError(f"job submit takes MODULE:FUNCTION, e.g. math:factorial (got {args.target!r})")
        fn = getattr(importlib.import_module(module_name), fn_name)
        call_args = json.loads(args.args) if args.args else []
        if not isinstance(call_args, list):
            raise UsageError(f"--args takes a JSON list, e.g. --args '[10]' (got {args.args!r})")
        handle = client.submit(fn, *call_args, coop=args.coop, member=args.member, priority=args.priority,
                               tags=args.tag or (), max_runtime_s=args.max_runtime,
                               resources={"cpus": args.cpus, "gpus": args.gpus})
        if not args.wait:
            print(handle.id)
            return EXIT_OK
        value = handle.result(timeout=args.timeout)
        _emit(args, {"task_id": handle.id, "result": value}, lambda d: f"{d['task_id']}: {d['result']!r}")
    elif args.action == "list":
        jobs = client.jobs(args.coop, args.member, args.status)
        _emit(args, [j.model_dump(mode="json") for j in jobs], lambda rows: table(
            ["job", "coop", "member", "state", "executor", "reason"],
            [(j["task_id"], j["coop_id"], j["member"], j["state"], j["executor_id"], j["reason"]) for j in rows]))
    elif args.action == "status":
        status = client.job(args.id).status()
        _emit(args, status.model_dump(mode="json"), lambda s: "\n".join(
            [f"{s['task_id']}: {s['state']} ({s['reason']})"]
            + [f"  {e['at']:.3f} {e['state']:<9} {e['message']}" for e in s["history"]]))
    elif args.action == "cancel":
        print(f"{args.id}: {client.job(args.id).cancel()}")
    elif args.action == "explain":
        _emit(args, client.job(args.id).explain(), lambda d: d["summary"])
    return EXIT_OK


def cmd_usage(args) -> int:
    u = _client(args).usage(args.coop, args.member)
    _emit(args, u.model_dump(mode="json"), lambda d: table(
        ["coop", "member", "period", "cpu-h", "gpu-h", "credits", "reserved cpu-h", "running", "tasks"],
        [(d["coop_id"], d["member"], d["period"], d["cpu_hours"], d["gpu_hours"], d["credits"],
          d["reserved_cpu_hours"], d["running"], d["tasks_completed"])]))
    return EXIT_OK


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coopsched", description="Policy-aware task scheduling for cooperatives, on Ray.")
    p.add_argument("--address", default=None, help="Ray cluster address (default: the running local cluster)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the two-cooperative demo on a local 4-node Ray cluster")
    d.add_argument("--simulated", action="store_true", help="run the core alone on simulated executors (no Ray)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("start", help="start the head (and a local Ray if none runs)")
    s.add_argument("--num-cpus", type=int, default=None)
    s.set_defaults(func=cmd_start)
    sub.add_parser("stop", help="stop the head, tracker and workers").set_defaults(func=cmd_stop)

    e = sub.add_parser("executor", help="join, list, drain or remove executors")
    esub = e.add_subparsers(dest="action", required=True)
    j = esub.add_parser("join", help="start this node's worker and register it")
    j.add_argument("--id", required=True)
    j.add_argument("--coop", required=True)
    j.add_argument("--region", default=None, help="default: this Ray node's 'region' label")
    j.add_argument("--capability", action="append", metavar="NAME=VERSION")
    j.add_argument("--trust", type=float, default=0.5)
    j.add_argument("--price-cpu-hour", type=float, default=1.0)
    j.add_argument("--price-gpu-hour", type=float, default=10.0)
    j.add_argument("--open-to", action="append", metavar="COOP", help="another coop (or '*') that may use it")
    esub.add_parser("list")
    for action in ("drain", "remove"):
        a = esub.add_parser(action)
        a.add_argument("id")
    e.set_defaults(func=cmd_executor)

    pol = sub.add_parser("policy", help="set, show, list, remove or validate policies")
    psub = pol.add_subparsers(dest="action", required=True)
    for action in ("set", "validate"):
        a = psub.add_parser(action)
        a.add_argument("file")
    for action in ("show", "remove"):
        a = psub.add_parser(action)
        a.add_argument("coop")
    psub.add_parser("list")
    pol.set_defaults(func=cmd_policy)

    job = sub.add_parser("job", help="submit, list, inspect or cancel jobs")
    jsub = job.add_subparsers(dest="action", required=True)
    js = jsub.add_parser("submit", help="run MODULE:FUNCTION under a coop's policy")
    js.add_argument("target", metavar="MODULE:FUNCTION")
    js.add_argument("--args", default=None, help="JSON list of arguments, e.g. '[10]'")
    js.add_argument("--coop", required=True)
    js.add_argument("--member", required=True)
    js.add_argument("--priority", default="normal")
    js.add_argument("--tag", action="append")
    js.add_argument("--cpus", type=float, default=1.0)
    js.add_argument("--gpus", type=float, default=0.0)
    js.add_argument("--max-runtime", type=float, default=None)
    js.add_argument("--wait", action="store_true")
    js.add_argument("--timeout", type=float, default=None)
    jl = jsub.add_parser("list")
    jl.add_argument("--coop")
    jl.add_argument("--member")
    jl.add_argument("--status")
    for action in ("status", "cancel", "explain"):
        a = jsub.add_parser(action)
        a.add_argument("id")
    job.set_defaults(func=cmd_job)

    u = sub.add_parser("usage", help="a member's usage this month")
    u.add_argument("coop")
    u.add_argument("member")
    u.set_defaults(func=cmd_usage)
    return p


def main(argv: list[str] | None = None) -> int:
    from policies.validation import InvalidRequest
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidRequest as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # PolicyViolation and the rest: say what happened, pick the exit code
        from scheduler.client import PolicyViolation
        if isinstance(exc, PolicyViolation):
            print(f"coopsched: refused by policy: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        print(f"coopsched: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
