"""The ``coopsched`` command: parser, dispatch and exit codes.

Exit codes: 0 ok, 1 error, 2 bad input or usage, 3 refused by policy, 4 refused by
authorization (unsigned, unknown key, forged, expired, replayed or forbidden). Tables by
default, ``--json`` for scripts (before or after the subcommand); errors go to stderr
and say how to fix them. ``--key FILE`` (or ``COOPSCHED_KEY``) signs every request. A command that has
no use for ``--address`` or ``--key`` (it connects to no cluster, or signs nothing) refuses them.
"""

from __future__ import annotations

import argparse
import sys

from scheduler import cli_args
from scheduler import cli_commands as c
from scheduler.cli_cluster import cmd_start, cmd_status, cmd_stop
from scheduler.names import NAMESPACE
from scheduler.tasks import JobState


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p.add_argument("--address", default=argparse.SUPPRESS, help="Ray cluster address (default: the running one)")
    p.add_argument("--key", default=argparse.SUPPRESS, help="private key file that signs requests (or COOPSCHED_KEY)")


def _sub(parent, name: str, help: str, func=None, *, unused: cli_args.Unused | None = None) -> argparse.ArgumentParser:
    """A subcommand; ``unused``: the common flags it has no use for, refused when given (exit 2)."""
    p = parent.add_parser(name, help=help, description=help)
    _common(p)
    if func is not None:
        p.set_defaults(func=func, unused=unused)
    return p


def _offline(why: str, example: str, json: str | None = None) -> cli_args.Unused:
    return cli_args.Unused(("--address", "--key"), why, example, json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coopsched", description="Policy-aware task scheduling for cooperatives, on Ray.")
    p.add_argument("--address", default=None, help="Ray cluster address (default: the running local cluster)")
    p.add_argument("--namespace", default=NAMESPACE, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--key", default=None, help="private key file that signs requests (default: $COOPSCHED_KEY)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = _sub(sub, "demo", "run the two-cooperative demo on a local 4-node Ray cluster", c.cmd_demo,
             unused=_offline("it runs on a Ray cluster of its own (on none with --simulated), in development mode",
                             "coopsched demo --simulated", json="it prints its tables for people to read"))
    d.add_argument("--simulated", action="store_true", help="the decision core alone on simulated executors")

    s = _sub(sub, "start", "start the head (and, if no Ray runs here, a local Ray cluster that runs until `stop`)",
             cmd_start)
    s.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of a new local Ray (refused with --address, or when a Ray of other CPUs runs already)")
    s.add_argument("--store", default=None, help="sqlite:///PATH (default), redis://HOST:PORT/DB or memory://")
    s.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    s.add_argument("--operator-key", default=None, metavar="FILE_OR_PUBKEY",
                   help="signed mode: the operator's public key (base64, a .pub or a .key file)")
    s.add_argument("--dev", action="store_true",
                   help="development mode: no keys, nothing verified (every output says so)")
    s.add_argument("--auth-window", type=float, default=None, metavar="S",
                   help="signed mode: accepted clock difference of a request, seconds (default 60)")
    s.add_argument("--borrowing-half-life", type=float, default=None, metavar="S",
                   help="how fast fair borrowing forgets what coops held of other coops' executors, seconds "
                        "(default 3600; 0: by what they hold now only)")
    _sub(sub, "stop", "stop the head, the tracker and every worker (and the local Ray that `start` started, if no "
         "other namespace's Coopsched runs on it)", cmd_stop,
         unused=cli_args.Unused(("--key",), "it stops the actors through Ray and sends the head no request to "
                                "sign (whoever can reach the cluster can stop it)",
                                "coopsched stop --address 10.0.0.5:6379"))
    _sub(sub, "status", "the Ray cluster, this namespace's head and what it holds, at a glance", cmd_status)
    b = _sub(sub, "bench", "run the placement-latency benchmark", c.cmd_bench,
             unused=_offline("the benchmark runs the decision core alone, in a process of its own, with no cluster",
                             "coopsched bench --quick", json="the benchmark prints its report and writes its figures "
                             "as JSON to benchmarks/results/placement_latency.json itself"))
    b.add_argument("--quick", action="store_true", help="a run of a few seconds")

    pol = _sub(sub, "policy", "set, show, list, remove, validate, diff, roll back policies")
    psub = pol.add_subparsers(dest="action", required=True, metavar="ACTION")
    ps = _sub(psub, "set", "install a policy file (a new version)", c.cmd_policy)
    ps.add_argument("file")
    ps.add_argument("--dry-run", action="store_true", help="replay recent jobs under it; change nothing")
    ps.add_argument("--last", type=int, default=None,
                    help=f"how many recent jobs --dry-run replays (default {c.DRY_RUN_JOBS}; only with --dry-run)")
    _sub(psub, "validate", "check a policy file; every error with its JSON path", c.cmd_policy,
         unused=_offline("it checks the file here, with no cluster (`coopsched policy diff FILE` compares it "
                         "with the head's policy)",
                         "coopsched policy validate timebank.json")).add_argument("file")
    for action, help in (("show", "print a coop's active policy"), ("remove", "deactivate a coop's policy"),
                         ("history", "every version of a coop's policy")):
        _sub(psub, action, help, c.cmd_policy).add_argument("coop")
    _sub(psub, "list", "every coop's active policy", c.cmd_policy)
    rb = _sub(psub, "rollback", "make an earlier version active again (as a new version)", c.cmd_policy)
    rb.add_argument("coop")
    rb.add_argument("version", type=int)
    mg = _sub(psub, "mgmt", "run a plug-in rule's management action", c.cmd_policy)
    mg.add_argument("coop")
    mg.add_argument("rule", help="the plug-in rule's name")
    mg.add_argument("mgmt_action", metavar="ACTION", help="e.g. reset_quota, set_quota, add_whitelist")
    mg.add_argument("--data", default=None, help="JSON object passed to the action")
    df = _sub(psub, "diff", "what FILE changes against the active version (or version A to B)", c.cmd_policy)
    df.add_argument("file", nargs="?")
    df.add_argument("--coop", help="the coop whose versions --base and --to are (a FILE names its own coop)")
    df.add_argument("--base", type=int, default=None, help="compare against this version instead of the active one")
    df.add_argument("--to", type=int, default=None, help="the version compared with --base, instead of a FILE")

    q = _sub(sub, "quota", "members' usage and limits")
    qsub = q.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help in (("show", "a member's usage and quota this month"), ("reset", "forget a member's usage this month")):
        a = _sub(qsub, action, help, c.cmd_quota)
        a.add_argument("coop")
        a.add_argument("member")
    _sub(qsub, "list", "every member's usage this month", c.cmd_quota).add_argument("coop")
    _sub(qsub, "coop", "every member together this month, against the coop's coop_quota", c.cmd_quota
         ).add_argument("coop")
    _sub(qsub, "clear-all", "forget every member's usage this month", c.cmd_quota).add_argument("coop")
    qs = _sub(qsub, "set", "set a member's used amounts this month (those left out keep theirs)", c.cmd_quota)
    qs.add_argument("coop")
    qs.add_argument("member")
    for flag in ("--cpu-hours", "--gpu-hours", "--credits"):
        qs.add_argument(flag, type=float, default=None)
    for action, help in (("limit", "change a member's own quota"), ("default-limit", "change the coop's default quota")):
        a = _sub(qsub, action, help, c.cmd_quota)
        a.add_argument("coop")
        if action == "limit":
            a.add_argument("member")
        a.add_argument("--cpu-hours-per-month", type=float)
        a.add_argument("--gpu-hours-per-month", type=float)
        a.add_argument("--credits-per-month", type=float)
        a.add_argument("--max-concurrent-tasks", type=int)
        a.add_argument("--max-priority", choices=("low", "normal", "high", "critical"))
        a.add_argument("--default-max-runtime-s", type=float)
    w = _sub(qsub, "whitelist", "members who bypass the monthly CPU, GPU and credit quotas", c.cmd_quota)
    w.add_argument("op", choices=("add", "remove"))
    w.add_argument("coop")
    w.add_argument("member")

    e = _sub(sub, "executor", "join, list, drain, remove executors; set their trust")
    esub = e.add_subparsers(dest="action", required=True, metavar="ACTION")
    j = _sub(esub, "join", "start this node's worker and register it", c.cmd_executor)
    j.add_argument("--id", required=True)
    j.add_argument("--coop", required=True)
    j.add_argument("--region", default=None, help="default: this Ray node's 'region' label")
    j.add_argument("--capability", action="append", metavar="NAME=VERSION")
    j.add_argument("--trust", default="0.5")
    j.add_argument("--price-cpu-hour", type=float, default=1.0)
    j.add_argument("--price-gpu-hour", type=float, default=10.0)
    j.add_argument("--open-to", action="append", metavar="COOP", help="another coop (or '*') that may use it")
    j.add_argument("--dispatch-ahead", default="0", metavar="ROUNDS",
                   help="rounds of its resources the head may hand over beyond what is free; the worker queues "
                        "them and starts each as a task ends (default 0; auto: the head sets it from the jobs' "
                        "run times)")
    j.add_argument("--executor-key", default=None, metavar="FILE",
                   help="the executor's private key (default with --key: a new key pair)")
    _sub(esub, "list", "every executor with its status and load", c.cmd_executor)
    for action, help in (("drain", "finish running tasks, start no new ones"),
                         ("remove", "forget it; its running tasks are retried elsewhere")):
        _sub(esub, action, help, c.cmd_executor).add_argument("id")
    st = _sub(esub, "set-trust", "change an executor's trust score (0..1)", c.cmd_executor)
    st.add_argument("id")
    st.add_argument("trust", type=float)

    k = _sub(sub, "keys", "make key pairs; register, list and remove public keys")
    ksub = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    kn = _sub(ksub, "new", "make a key pair: NAME.key (private, mode 0600) and NAME.pub (never over existing ones)",
              c.cmd_keys, unused=_offline("it makes the key pair here, with no cluster (--name and --out say where)",
                                          "coopsched keys new --name alice --out ~/.coopsched"))
    kn.add_argument("--out", default=".", metavar="DIR", help="directory to write them to (default: here)")
    kn.add_argument("--name", default="coopsched", help="file name without extension (default: coopsched)")
    ka = _sub(ksub, "add", "register a public key as a member, admin or executor of a coop", c.cmd_keys)
    ka.add_argument("--coop", required=True)
    ka.add_argument("--role", required=True, choices=("member", "admin", "executor"))
    ka.add_argument("--id", required=True, help="the member id (e.g. a DID), executor id or admin name")
    ka.add_argument("public_key", metavar="PUBKEY", help="base64 public key, or its .pub file")
    kl = _sub(ksub, "list", "registered keys (an admin sees its coop's)", c.cmd_keys)
    kl.add_argument("--coop", default=None)
    _sub(ksub, "remove", "unregister a key (by key id)", c.cmd_keys).add_argument("key_id")
    _sub(ksub, "whoami", "who the head takes this key for", c.cmd_keys)

    job = _sub(sub, "job", "submit, list, inspect or cancel jobs; forget a damaged job record")
    jsub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    js = _sub(jsub, "submit", "run MODULE:FUNCTION under a coop's policy", c.cmd_job)
    js.add_argument("target", metavar="MODULE:FUNCTION")
    js.add_argument("--args", default=None, help="JSON list of arguments, e.g. '[10]'")
    js.add_argument("--coop", required=True)
    js.add_argument("--member", required=True)
    js.add_argument("--priority", default="normal")
    js.add_argument("--tag", action="append")
    js.add_argument("--cpus", type=float, default=1.0)
    js.add_argument("--gpus", type=float, default=0.0)
    js.add_argument("--max-runtime", type=float, default=None, help="seconds")
    js.add_argument("--max-retries", type=int, default=2, help="runs again after a lost worker or node (default 2)")
    js.add_argument("--stop-grace", type=float, default=0.0, metavar="S",
                    help="stopped to make room, the job has S seconds to save a checkpoint and end before it is "
                         "killed (scheduler.checkpoint.stop_requested; default 0: killed at once)")
    js.add_argument("--wait", action="store_true", help="follow it and print the result")
    js.add_argument("--timeout", type=float, default=None, help="seconds --wait follows the job (only with --wait)")
    jl = _sub(jsub, "list", "jobs, newest last", c.cmd_job)
    jl.add_argument("--coop")
    jl.add_argument("--member")
    jl.add_argument("--status", choices=[state.value for state in JobState])
    jq = _sub(jsub, "queue", "waiting jobs in the order the next round tries them (effective priority, fair "
              "share, submission time), numbered over every coop's queue", c.cmd_job)
    jq.add_argument("--coop")
    jq.add_argument("--member")
    jq.add_argument("--limit", type=int, default=50)
    for action, help in (("status", "state, reason and history"), ("cancel", "stop it (charged for the time used)"),
                         ("explain", "why it is where it is"),
                         ("forget", "delete a job record that is damaged in the store, releasing its reservation and "
                                    "what it held on executors (a readable record is refused: cancel its job)")):
        _sub(jsub, action, help, c.cmd_job).add_argument("id")

    u = _sub(sub, "usage", "a member's usage this month (same as quota show)", c.cmd_quota)
    u.add_argument("coop")
    u.add_argument("member")
    u.set_defaults(action="show")
    ch = _sub(sub, "changes", "the change log: policies, quotas, executors", c.cmd_changes)
    ch.add_argument("coop", nargs="?")
    ch.add_argument("--limit", type=int, default=50)
    au = _sub(sub, "audit", "sampled job records", c.cmd_audit)
    au.add_argument("action", choices=("list", "get", "latest", "delete"))
    au.add_argument("session", nargs="?", help="coop/member")
    au.add_argument("seq", nargs="?", type=int)
    au.add_argument("--limit", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> int:
    from policies.validation import InvalidRequest
    from scheduler.job_handle import JobFailed, JobRecordDamaged, PolicyViolation, UnreadableAnswer
    from scheduler.head_auth import AccessRefused
    args = build_parser().parse_args(argv)
    try:
        cli_args.check_common_flags(args)
        return args.func(args)
    except cli_args.UsageError as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return c.EXIT_USAGE
    except InvalidRequest as exc:
        print(f"coopsched: {exc.what} is not valid:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return c.EXIT_USAGE
    except PolicyViolation as exc:
        print(f"coopsched: refused by policy: {exc}", file=sys.stderr)
        return c.EXIT_REJECTED
    except AccessRefused as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return c.EXIT_FORBIDDEN
    except (JobFailed, JobRecordDamaged, UnreadableAnswer) as exc:
        print(f"coopsched: {exc}", file=sys.stderr)
        return c.EXIT_ERROR
    except (ConnectionError, KeyError, TimeoutError) as exc:
        print(f"coopsched: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return c.EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
