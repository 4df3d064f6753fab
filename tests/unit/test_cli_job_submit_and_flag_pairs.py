"""Review of ``coopsched job submit MODULE:FUNCTION`` resolving MODULE from the current directory.

1. The module was found here, but the job's payload named it by reference (cloudpickle pickles a function
   of an importable module as "module.name"): the executor's worker, whose processes have no such
   directory on their path (Ray gives them the sys.path of the driver that started the worker actor,
   ``coopsched executor join``, run elsewhere), failed the job with ``ModuleNotFoundError`` after it was
   admitted, placed and charged. A module found only in the current directory now travels by value, as
   ``benchmarks/`` does for Ray's workers (``register_pickle_by_value``).
2. A module that raises on import (a SyntaxError, a NameError in its body) crashed the command with a
   traceback; only ImportError and AttributeError were answered. Now it is a usage error naming MODULE
   and what it raised (exit 2).
"""
from __future__ import annotations

import argparse
import importlib
import sys

import pytest
from ray import cloudpickle

from scheduler import cli_commands
from scheduler.cli import main
from scheduler.task_payload import pickled_call

MODULE = "coopsched_review_cwd_job"


@pytest.fixture
def as_the_console_script(monkeypatch, tmp_path):
    """A module in ``tmp_path``, the current directory; sys.path as the `coopsched` console script has it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    importlib.invalidate_caches()
    yield tmp_path
    module = sys.modules.pop(MODULE, None)
    if module is not None:
        try:
            cloudpickle.unregister_pickle_by_value(module)
        except ValueError:
            pass


def _args(target: str, call_args: str = "[21]") -> argparse.Namespace:
    return argparse.Namespace(target=target, args=call_args)


def test_a_function_found_in_the_current_directory_runs_where_that_directory_is_not(as_the_console_script,
                                                                                    monkeypatch, tmp_path_factory):
    (as_the_console_script / f"{MODULE}.py").write_text(
        "FACTOR = 2\n\ndef double(x):\n    return FACTOR * x\n")
    fn, call_args = cli_commands._call_of(_args(f"{MODULE}:double"))
    payload = pickled_call(fn, call_args, {})
    # the executor's task: another process, another directory, no such module on its path
    sys.modules.pop(MODULE, None)
    monkeypatch.chdir(tmp_path_factory.mktemp("executor"))
    importlib.invalidate_caches()
    loaded, args, kwargs = cloudpickle.loads(payload)
    assert loaded(*args, **kwargs) == 42


def test_an_installed_module_still_travels_by_reference(as_the_console_script):
    fn, _ = cli_commands._call_of(_args("math:factorial"))
    assert b"factorial" in pickled_call(fn, [5], {}) and not cloudpickle.cloudpickle._is_registered_pickle_by_value(
        sys.modules["math"])


@pytest.mark.parametrize("body, says", [
    ("def double(x)\n    return 2 * x\n", "SyntaxError"),
    ("undefined_name + 1\n", "NameError"),
], ids=["syntax-error", "raises"])
def test_a_module_that_fails_on_import_is_a_usage_error(as_the_console_script, capsys, body, says):
    (as_the_console_script / f"{MODULE}.py").write_text(body)
    code = main(["job", "submit", f"{MODULE}:double", "--coop", "c:c", "--member", "alice"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("coopsched:") and f"{MODULE}:double" in err and says in err and "e.g." in err, err


# ---------------------------------------------------------------- 3: flags that only mean something beside another
GOOD_FILE = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "policies/examples/timebank.json")


@pytest.mark.parametrize("argv, says", [
    (["job", "submit", "math:factorial", "--args", "[5]", "--coop", "c:c", "--member", "alice", "--timeout", "60"],
     ["--timeout", "60", "--wait", "e.g."]),
    (["policy", "set", GOOD_FILE, "--last", "20"], ["--last", "20", "--dry-run", "e.g."]),
], ids=["timeout-without-wait", "last-without-dry-run"])
def test_a_flag_that_only_works_beside_another_is_refused_without_it(no_cluster, capsys, argv, says):
    """`job submit --timeout 60` without --wait submitted and returned at once (the timeout bounds the wait
    only); `policy set FILE --last 20` without --dry-run installed the policy (--last sizes the dry run)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and all(s in err for s in says), (code, err)
    assert "no running Ray cluster" not in err, err


def test_last_and_timeout_still_work_beside_the_flag_they_belong_to(no_cluster, capsys):
    assert main(["policy", "set", GOOD_FILE, "--dry-run", "--last", "20"]) == 1  # checked, then it connects
    assert main(["job", "submit", "math:factorial", "--args", "[5]", "--coop", "c:c", "--member", "alice",
                 "--wait", "--timeout", "60"]) == 1
    assert capsys.readouterr().err.count("no running Ray cluster") == 2
