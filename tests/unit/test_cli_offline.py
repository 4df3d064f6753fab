"""The CLI's parts that need no cluster: validation output, exit codes, usage errors."""

from __future__ import annotations

import json

import pytest

from scheduler.cli import main

GOOD = "policies/examples/timebank.json"


def test_validate_a_good_policy(capsys):
    assert main(["policy", "validate", GOOD]) == 0
    assert "a valid policy for coop timebank:seattle" in capsys.readouterr().out


def test_validate_reports_every_error_with_its_json_path(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"coop_id": "x", "rules": [{"type": "TimeWindow", "allowed_hours": [25]},
                                                         {"type": "Nope"}],
                               "default_quota": {"cpu_hours_per_month": -1}}))
    assert main(["policy", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("is not valid:")
    paths = [line.strip().split(":")[0] for line in err[1:]]
    assert paths == ["rules[0].TimeWindow.allowed_hours", "rules[1]", "default_quota.cpu_hours_per_month"]
    assert all("received" in line and "accepted" in line and "example" in line for line in err[1:])


def test_broken_json_names_line_and_column(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text('{"coop_id": "x",\n "rules": [}')
    assert main(["policy", "validate", str(bad)]) == 2
    assert "line 2 column" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["policy"], ["job", "submit"], ["quota", "whitelist", "maybe", "c", "m"]],
                         ids=["no-action", "missing-target", "bad-choice"])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_json_output_is_machine_readable(capsys):
    assert main(["policy", "validate", GOOD, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_cli_reference_doc_is_current():
    """docs/cli.md is generated from the parser: regenerate with `python -m scheduler.cli_reference`."""
    from pathlib import Path

    from scheduler.cli_reference import render
    doc = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert doc.read_text() == render(), "run: python -m scheduler.cli_reference > docs/cli.md"


def test_keys_new_writes_a_private_key_0600_and_prints_the_public_key(tmp_path, capsys):
    import stat

    from scheduler.identity import load_private_key, public_key_b64
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "alice"]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o600
    assert public_key_b64(load_private_key(tmp_path / "alice.key")) == printed == \
        (tmp_path / "alice.pub").read_text().strip()
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "alice"]) == 2  # never overwrites a key
    assert "never overwritten" in capsys.readouterr().err
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "bob", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_id"].startswith("k_")


@pytest.mark.parametrize("argv", [["start"], ["start", "--dev", "--operator-key", "x"]], ids=["neither", "both"])
def test_start_needs_exactly_one_of_operator_key_or_dev(argv, capsys):
    assert main(argv) == 2
    assert "--operator-key FILE_OR_PUBKEY" in capsys.readouterr().err


def test_start_refuses_an_operator_key_that_is_not_one(capsys):
    assert main(["start", "--operator-key", "not-a-key"]) == 2
    assert "--operator-key" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["policy not in UTF-8", "operator key is a directory", "key pair under a file"])
def test_a_bad_file_is_a_one_line_error_with_exit_2_not_a_traceback(case, tmp_path, capsys):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"coop_id": "caf\xe9"}')
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    argv = {"policy not in UTF-8": ["policy", "validate", str(latin1)],
            "operator key is a directory": ["start", "--operator-key", str(tmp_path)],
            "key pair under a file": ["keys", "new", "--out", str(a_file / "sub"), "--name", "k"]}[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("coopsched:") and "Traceback" not in err


@pytest.mark.parametrize("argv, says", [
    (["job", "submit", "factorial", "--coop", "c", "--member", "m"], "MODULE:FUNCTION"),
    (["job", "submit", "math:factorial", "--args", "{not json", "--coop", "c", "--member", "m"], "--args"),
    (["quota", "limit", "c", "m"], "give at least one limit"),
    (["quota", "set", "c", "m"], "give at least one amount"),
    (["executor", "join", "--id", "e", "--coop", "c", "--trust", "high"], "--trust"),
    (["policy", "mgmt", "c", "r", "reset", "--data", "{oops"], "--data"),
    (["policy", "diff"], "policy diff takes FILE"),
    (["job", "submit", "math:factorial", "--coop", "c", "--member", "m", "--stop-grace", "500"],
     "stop_grace_s: received 500"),
    (["job", "submit", "math:factorial", "--coop", "c", "--member", "m", "--max-retries", "99"],
     "max_retries: received 99"),
], ids=["target", "args", "limit", "amount", "trust", "mgmt-data", "diff", "stop-grace", "max-retries"])
def test_bad_usage_is_exit_2_even_when_no_cluster_runs(no_cluster, capsys, argv, says):
    """A wrong command line is named as such (exit 2) before any connection is tried: it used to say
    \"no running Ray cluster found\" (exit 1), and the user learnt of the mistake only after starting one."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and says in err, (code, err)
