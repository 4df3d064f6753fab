"""The ``coopsched`` command never drops what it was told: a flag it would not honour, a key file it
would overwrite or a bad argument of ``start`` is refused (exit 2, naming the flag, what it received,
what is accepted and an example) before anything connects, runs or is written.

Findings of a review of the interface, each closed: they were accepted and ignored, or found only
after a connection attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import cli_commands
from scheduler.cli import main
from scheduler.identity import generate_key, public_key_b64

GOOD = "policies/examples/timebank.json"  # a policy of coop timebank:seattle
GOOD_FILE = str(Path(__file__).resolve().parents[2] / GOOD)
PUB = public_key_b64(generate_key())
ADDRESS = "10.0.0.5:6379"
CONNECTED = ("no running Ray cluster", "no Ray cluster", "Could not find any running Ray")


def _refused(capsys, argv, *says):
    """``argv`` exits 2 before any connection, and its message says each of ``says``."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and all(s in err for s in says), (code, err)
    assert err.startswith("coopsched:") and "Traceback" not in err, err
    assert not any(c in err for c in CONNECTED), err
    return err


@pytest.fixture
def nothing_runs(monkeypatch):
    """The demos and the benchmark, were they reached, would run: here they fail the test instead."""
    import scheduler.demo
    import scheduler.simulated_demo

    def ran(*args, **kwargs):
        raise AssertionError("the command ran although it should have been refused")
    monkeypatch.setattr(scheduler.demo, "run", ran)
    monkeypatch.setattr(scheduler.simulated_demo, "run", ran)
    monkeypatch.setattr(cli_commands.subprocess, "call", ran)


# ---------------------------------------------------------------- 1: policy diff FILE with --to or --coop
@pytest.mark.parametrize("argv, says", [
    (["policy", "diff", GOOD, "--to", "3"], ["--to 3", "FILE", "--coop COOP --base A --to B", "e.g."]),
    (["policy", "diff", GOOD, "--base", "1", "--to", "3"], ["--to 3", "FILE", "e.g."]),
    (["policy", "diff", GOOD, "--coop", "other:coop"], ["--coop", "'other:coop'", "timebank:seattle", "e.g."]),
], ids=["to", "base-and-to", "another-coop"])
def test_policy_diff_of_a_file_refuses_the_flags_it_cannot_honour(no_cluster, capsys, argv, says):
    """--to was dropped (FILE is the side compared) and --coop was dropped (the file names its coop):
    the diff shown was not the one asked for."""
    _refused(capsys, argv, *says)


def test_policy_diff_of_a_file_takes_the_files_own_coop_as_coop(no_cluster, capsys):
    _refused(capsys, ["policy", "diff", GOOD, "--coop", "other:coop"], "--coop")
    assert main(["policy", "diff", GOOD, "--coop", "timebank:seattle"]) == 1  # it goes on: connects
    assert "no running Ray cluster" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["policy", "diff", "--coop", "c", "--base", "0", "--to", "2"], "--base"),
    (["policy", "diff", "--coop", "c", "--base", "1", "--to", "-2"], "--to"),
    (["policy", "rollback", "c", "0"], "VERSION"),
], ids=["base", "to", "rollback"])
def test_a_policy_version_below_1_is_refused_before_connecting(no_cluster, capsys, argv, says):
    _refused(capsys, argv, says, "whole number >= 1", "e.g.")


# ---------------------------------------------------------------- 2: --address and --key where nothing connects
@pytest.mark.parametrize("command", [
    ["keys", "new", "--name", "alice"],
    ["policy", "validate", GOOD],
    ["demo"],
    ["demo", "--simulated"],
    ["bench", "--quick"],
], ids=lambda command: " ".join(command[:2]))
@pytest.mark.parametrize("flag, value", [("--address", ADDRESS), ("--key", "alice.key")])
@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_a_command_that_connects_to_no_cluster_refuses_address_and_key(
        no_cluster, nothing_runs, monkeypatch, tmp_path, capsys, command, flag, value, where):
    """They were accepted and had no effect: `coopsched --address HOST:PORT keys new` wrote a key pair
    here, `--key` on `policy validate` signed nothing, `demo` ran on its own cluster."""
    monkeypatch.chdir(tmp_path)  # keys new writes here, if it is not refused
    command = [GOOD_FILE if part == GOOD else part for part in command]
    argv = [flag, value] + command if where == "before the command" else command + [flag, value]
    _refused(capsys, argv, flag, repr(value), "e.g.")
    assert not (tmp_path / "alice.key").exists()


@pytest.mark.parametrize("command", [["demo"], ["demo", "--simulated"], ["bench", "--quick"]],
                         ids=lambda command: " ".join(command))
@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_a_command_without_machine_readable_output_refuses_json(no_cluster, nothing_runs, capsys, command, where):
    """`--json` was accepted and had no effect: the demo printed its tables, the benchmark its report."""
    _refused(capsys, ["--json"] + command if where == "before the command" else command + ["--json"],
             "--json", "e.g.")


def test_stop_refuses_key_and_takes_address(no_cluster, capsys):
    """stop kills the head's actors through Ray; no request is signed, so --key did nothing."""
    _refused(capsys, ["stop", "--key", "operator.key"], "--key", "'operator.key'", "e.g.")
    assert main(["stop", "--address", ADDRESS]) == 1  # --address is used: it tries that cluster
    assert "no running Ray cluster" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--address", "", "job", "list"], "--address"),
    (["job", "list", "--address", "  "], "--address"),
    (["--key", "", "job", "list"], "--key"),
], ids=["address", "address-blank", "key"])
def test_an_empty_address_or_key_is_refused_not_taken_for_none(no_cluster, monkeypatch, capsys, argv, says):
    """An empty --address joined the local cluster ("auto") and an empty --key fell back to $COOPSCHED_KEY
    (or to no key at all), each silently."""
    monkeypatch.delenv("COOPSCHED_KEY", raising=False)
    _refused(capsys, argv, says, "''" if "  " not in argv else "'  '", "e.g.")


# ---------------------------------------------------------------- 3: keys new over a lone public key
def test_keys_new_refuses_to_overwrite_a_lone_public_key(tmp_path, capsys):
    """alice.pub without alice.key beside it was overwritten with a new public key."""
    (tmp_path / "alice.pub").write_text("the old public key\n")
    err = _refused(capsys, ["keys", "new", "--out", str(tmp_path), "--name", "alice"],
                   str(tmp_path / "alice.pub"), "--name", "never overwritten", "e.g.")
    assert "alice.key" not in err.split("exists")[0]
    assert (tmp_path / "alice.pub").read_text() == "the old public key\n"
    assert not (tmp_path / "alice.key").exists()


# ---------------------------------------------------------------- 4: start --address checks before connecting
@pytest.mark.parametrize("argv, says", [
    (["start"], ["--operator-key FILE_OR_PUBKEY", "neither"]),
    (["start", "--dev", "--operator-key", PUB], ["--operator-key FILE_OR_PUBKEY", "both"]),
    (["start", "--dev", "--metrics-port", "70000"], ["--metrics-port", "70000"]),
    (["start", "--dev", "--auth-window", "5"], ["--auth-window", "with --dev"]),
    (["start", "--operator-key", "not-a-key"], ["--operator-key"]),
    (["start", "--dev", "--store", "postgres://db"], ["--store", "'postgres://db'", "sqlite:///"]),
    (["start", "--dev", "--key", "/nonexistent/operator.key"], ["key", "/nonexistent/operator.key"]),
    (["start", "--dev", "--num-cpus", "4"], ["--num-cpus 4", ADDRESS]),
], ids=["no-mode", "two-modes", "metrics-port", "auth-window", "operator-key", "store", "key", "num-cpus"])
def test_start_with_address_checks_its_arguments_before_connecting(no_cluster, capsys, argv, says):
    """With --address, start joined the cluster first: a wrong argument cost a connection attempt (or a
    hang) and was then reported as 'no cluster' instead of as itself. (--num-cpus sizes a new local Ray:
    with --address it was dropped.)"""
    _refused(capsys, argv + ["--address", ADDRESS], *says)


@pytest.mark.parametrize("cpus", ["0", "-2"])
def test_start_refuses_a_local_ray_of_no_cpus_before_starting_it(no_cluster, capsys, cpus):
    _refused(capsys, ["start", "--dev", "--num-cpus", cpus], "--num-cpus", cpus, "e.g.")
