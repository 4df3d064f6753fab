"""A running job whose record a restarted head cannot restore, and whose record no longer says where (or with
what) it runs, holds no less than one whose record is damaged: where its placement cannot be read, every
executor is held until its worker says whether it runs the attempt; where its resources cannot be read (the
field is missing), all of its executor. The Head is the real class without Ray, on a SQLite file (as in
test_head_recovery_held_capacity)."""
from __future__ import annotations

import asyncio

import pytest

from scheduler.held_capacity import held_attempt
from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import open_head
from tests.unit.test_head_recovery_held_capacity import Worker, stored_then_spoiled, submitted

PLACEMENT_UNREADABLE = {  # a running job's record that no longer restores, and no longer says where it runs
    "placement renamed": lambda r: r.update(placement={"executor": r["placement"]["executor_id"]}),
    "placement a string": lambda r: r.update(placement=r["placement"]["executor_id"]),
    "placement dropped": lambda r: [r.update(placement=None), r.pop("decision")],
}


@pytest.mark.parametrize("spoil", PLACEMENT_UNREADABLE.values(), ids=PLACEMENT_UNREADABLE.keys())
def test_a_running_job_whose_placement_cannot_be_read_holds_every_executor_until_asked(tmp_path, spoil):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, spoil)  # "run" runs on e1 (1 CPU)

    async def main():
        e1 = Worker("e1", runs=("run",))
        head = await open_head(url, {"e1": e1})
        assert head.core.task("run") is None  # not restored
        before = await submitted(head, "new")  # before the fix: placed on e1, beside the attempt still there
        await head._watch_once()  # e1's worker says it runs "run": e1 stays held
        await settle()
        still = (head.core.job("new").state, head.core.job("new").executor_id)
        e1.runs = []  # it ended there
        await head._watch_once()
        await settle()
        return before, ("running", ()) in e1.calls, still, (head.core.job("new").state, head.core.job("new").executor_id)

    before, asked, still, after = asyncio.run(main())
    assert before == {"new": (JobState.QUEUED, None)}, "e1 was handed the CPU 'run' may still use"
    assert asked and still == (JobState.QUEUED, None)
    assert after == (JobState.RUNNING, "e1")


def test_a_running_job_whose_resources_field_is_missing_holds_all_of_its_executor(tmp_path):
    """Resources() is 1 CPU by default: a record with no ``resources`` (another release's shape) may have asked
    for more, so what it asked cannot be read, and the executor's own resources are held."""
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, lambda r: [r.pop("decision"), r["task"].pop("resources")], cpus=2)

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        attempt = held_attempt(head.store.get_job("run"), head.core.table)
        return attempt.whole, await submitted(head, "new")

    whole, placed = asyncio.run(main())
    assert whole, "a missing resources field was read as the default 1 CPU"
    assert placed == {"new": (JobState.QUEUED, None)}
