"""Stopping running tasks to make room, on random shared fleets (hypothesis, the simulated executors).

Whatever the coops' ``reclaim`` and ``preempt_within_coop``, the executors' ``dispatch_ahead`` and the
arrivals: every task ends, succeeded; each is charged once, for the run that completed (a stopped attempt
costs its member nothing); a reclaim only ever stops another coop's task on the reclaiming owner's executor,
and a preemption within a coop only a task of that coop of lower effective priority.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import event as event_, given, settings, strategies as st

from policies.model import CoopPolicy
from scheduler.tasks import JobState
from tests.builders import make_executor, make_policy, make_sim, make_task

COOPS = ("a", "b", "c")
PRIORITIES = ("low", "normal", "high", "critical")

policies = st.fixed_dictionaries({c: st.tuples(st.sampled_from(["never", "lower_priority", "any"]),
                                               st.sampled_from(["lower_priority", "lower_priority", "never"])) for c in COOPS})
executors = st.lists(st.tuples(st.sampled_from(COOPS), st.sampled_from([1, 2, 4]), st.integers(0, 2)),
                     min_size=1, max_size=4)
tasks = st.lists(st.tuples(st.sampled_from(COOPS), st.sampled_from(["m1", "m2"]), st.sampled_from(PRIORITIES),
                           st.sampled_from([1, 2]), st.integers(20, 200), st.integers(0, 100)),
                 min_size=1, max_size=20)

_PREEMPTED = re.compile(r"preempted on (\S+) for task (\S+) of its coop, of higher priority \(([\d.]+)\)")
_RECLAIMED = re.compile(r"preempted on (\S+): its owner, coop (\S+), reclaims it for task ([^\s;]+)")


@settings(max_examples=80, deadline=None)
@given(policy_of=policies, fleet=executors, arrivals=tasks)
def test_every_task_ends_charged_once_and_only_what_the_rules_allow_is_stopped(policy_of, fleet, arrivals):
    first, *rest = COOPS
    pols = {c: CoopPolicy.model_validate({**make_policy(coop=c, rules=[
        {"type": "MemberPriority", "member": "m2", "multiplier": 2.0}]).model_dump(mode="json"),
        "reclaim": policy_of[c][0], "preempt_within_coop": policy_of[c][1]}) for c in COOPS}
    sim = make_sim(pols[first], [make_executor(f"x{i}", coop=c, cpus=cpus, dispatch_ahead=ahead, open_to=("*",))
                                 for i, (c, cpus, ahead) in enumerate(fleet)])
    for c in rest:
        sim.core.set_policy(pols[c])
    largest = max(cpus for _, cpus, _ in fleet)
    submitted = {}
    start = sim.clock()
    for coop, member, priority, cpus, seconds, at in sorted(arrivals, key=lambda a: a[5]):
        sim.run(until=start + at)
        task = make_task(coop=coop, member=member, priority=priority, cpus=cpus, runtime=600)
        decision = sim.submit(task, duration_s=seconds)
        assert decision.admitted == (cpus <= largest), decision.reasons
        if decision.admitted:
            submitted[task.task_id] = (task, seconds)
    sim.run()
    for task_id, (task, _) in submitted.items():
        job = sim.core.job(task_id)
        assert job.state is JobState.SUCCEEDED, (task_id, job.state, job.reason)
        for happened in job.history:
            if (m := _PREEMPTED.search(happened.message)) is not None:
                event_("a task stopped for a task of higher priority of its coop")
                stopper = sim.core.job(m.group(2))
                assert stopper.coop_id == task.coop_id and job.effective_priority < float(m.group(3))
            if (m := _RECLAIMED.search(happened.message)) is not None:
                event_("a task stopped by an owner's reclaim")
                executor, owner, stopper = m.groups()
                assert sim.core.table.spec(executor).coop_id == owner != task.coop_id
                assert sim.core.job(stopper).coop_id == owner
                if policy_of[owner][0] == "lower_priority":
                    assert task.priority.rank < sim.core.task(stopper).priority.rank
    for coop in COOPS:
        for member in ("m1", "m2"):
            ran = sum(t.resources.cpus * s for t, s in submitted.values() if (t.coop_id, t.member) == (coop, member))
            assert sim.core.usage(coop, member).cpu_hours == pytest.approx(ran / 3600, abs=1e-5)
