"""Models the core builds without validation (``trusted``, ``trusted_maker``) are the same objects
validation would make: equal, the same JSON, copyable, and nothing missing."""

from __future__ import annotations

import pytest

from policies.reasons import Decision, unavailable
from policies.validation import trusted, trusted_maker
from scheduler.jobs import StatusEvent
from scheduler.placement import Offer, Placement
from scheduler.tasks import JobState
from tests.builders import make_task

TASK = make_task(task_id="t-trusted")
OFFER = Offer(executor_id="e2", score=0.5, breakdown={"trust": 0.5})
CASES = [
    ("status event", StatusEvent, {"at": 1.5, "state": JobState.RUNNING, "message": "placed on e1 (attempt 1)"}),
    ("decision", Decision, {"task_id": "t1", "coop_id": "coop", "admitted": False,
                            "reasons": (unavailable("quota", "over"),), "warnings": (), "effective_priority": 2.0,
                            "not_before": None, "enforcement_mode": "strict"}),
    ("placement", Placement, {"task": TASK, "executor_id": "e1", "node_id": "n1", "score": 0.75,
                              "breakdown": {"trust": 0.25, "capacity": 0.5}, "runners_up": (OFFER,),
                              "placed_at": 3.0, "attempt": 2, "relaxed": ("gdpr",)}),
]


@pytest.mark.parametrize("name, model, values", CASES, ids=[c[0] for c in CASES])
def test_a_made_model_is_the_validated_one(name, model, values):
    make = trusted_maker(model, *values)
    made, kept, validated = make(*values.values()), trusted(model, **values), model(**values)
    for got in (made, kept):
        assert got == validated and type(got) is model
        assert got.model_dump_json() == validated.model_dump_json()
        assert got.model_copy(update={}) == validated and got.__pydantic_fields_set__ == set(model.model_fields)


def test_a_maker_needs_every_field_once():
    with pytest.raises(TypeError, match="each of its fields once"):
        trusted_maker(StatusEvent, "at", "state")
    with pytest.raises(TypeError, match="each of its fields once"):
        trusted_maker(StatusEvent, "at", "state", "message", "at")
