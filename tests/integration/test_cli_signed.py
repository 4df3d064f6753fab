"""A coop run from the command line alone, in signed mode: the operator starts the head with its
key, registers an admin, the admin a member and an executor, the member submits and reads its
usage, and what nobody signed, or someone else's, is refused with exit code 4."""

from __future__ import annotations

import json

import pytest

from scheduler.cli import main
from scheduler.client import shutdown
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
NS = "coopsched-cli-signed"
COOP = "timebank:seattle"


@pytest.fixture
def cli(ray_cluster, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--namespace", NS, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    shutdown(NS)


def test_a_signed_coop_from_the_command_line(cli, tmp_path):
    keys = str(tmp_path)
    for name in ("operator", "ann", "alice", "bob"):
        assert cli("keys", "new", "--out", keys, "--name", name)[0] == 0
    key = {name: str(tmp_path / f"{name}.key") for name in ("operator", "ann", "alice", "bob")}
    pub = {name: str(tmp_path / f"{name}.pub") for name in ("operator", "ann", "alice", "bob")}

    code, out, err = cli("--key", key["operator"], "start", "--operator-key", pub["operator"], "--store", "memory://")
    assert code == 0 and "signed mode" in out and "DEVELOPMENT MODE" not in out + err
    assert cli("--key", key["operator"], "keys", "add", "--coop", COOP, "--role", "admin", "--id", "ann",
               pub["ann"])[0] == 0
    admin = ("--key", key["ann"])
    for member in ("alice", "bob"):
        assert cli(*admin, "keys", "add", "--coop", COOP, "--role", "member", "--id", f"did:icn:{member}",
                   pub[member])[0] == 0
    assert cli(*admin, "policy", "set", "policies/examples/timebank.json")[0] == 0
    code, out, _ = cli(*admin, "executor", "join", "--id", "signed-cli-1", "--coop", COOP, "--region", "us-west")
    assert code == 0 and "joined" in out
    code, out, _ = cli("status")  # unsigned: that it runs, and why the rest is not shown
    assert code == 0 and "signed mode; the rest needs a registered key" in out and "give your key" in out
    code, out, _ = cli(*admin, "status")
    assert code == 0 and "executors    1: 1 active" in out

    code, out, err = cli("--key", key["alice"], "job", "submit", "math:factorial", "--args", "[5]", "--coop", COOP,
                         "--member", "did:icn:alice", "--max-runtime", "60", "--wait")
    assert code == 0 and out.strip() == "120", err
    def completed() -> int:
        code, out, _ = cli("--key", key["alice"], "--json", "usage", COOP, "did:icn:alice")
        assert code == 0
        return json.loads(out)["tasks_completed"]

    wait_for(lambda: completed() == 1, limit_s=30, what="alice's job to be charged")

    code, _, err = cli("--key", key["bob"], "job", "submit", "math:factorial", "--args", "[5]", "--coop", COOP,
                       "--member", "did:icn:alice")  # bob as alice
    assert code == 4 and "forbidden" in err
    code, _, err = cli("--key", key["bob"], "usage", COOP, "did:icn:alice")
    assert code == 4 and "forbidden" in err
    code, _, err = cli("--key", key["alice"], "policy", "set", "policies/examples/timebank.json")  # a member
    assert code == 4 and "forbidden" in err
    code, _, err = cli("executor", "list")  # no key at all
    assert code == 4 and "unsigned" in err
    code, out, _ = cli(*admin, "--json", "changes", COOP)
    assert code == 0 and {c["actor"] for c in json.loads(out)} >= {"admin:ann"}
