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
