"""The head's policies follow its store (a mixin of ``scheduler.head.Head``).

Several head replicas may share one store (Redis). A coop admin sets a policy through one of them;
the others decide that coop's submissions by it too, within ``POLICY_REFRESH_S``: every head's
watchdog reads which version of each coop's policy is active (one small read: coop -> version),
and takes the versions it does not hold yet, and the removals, as an informer keeps Kubernetes'
controllers in step with the API server. The same reading restores the policies when the head
starts (``_restore_policies``), so the two can never disagree about what a stored version means.

A version this head cannot use fails closed, at start as at a refresh: its coop has no policy here
(its submissions are refused and its queued tasks wait, with the reason), because an older version
may allow what the new one took away. That is a version damaged in the store, or one this release
or this machine refuses (a plug-in rule whose package is missing here). It is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from policies.validation import InvalidRequest
from scheduler.state_store import PolicyVersion

log = logging.getLogger("coopsched.head")

POLICY_REFRESH_S = 2.0
"""How stale a head's policies may get: a policy set or removed through another head replica on the same
store applies here within this (plus the watchdog's one-second tick)."""


class PolicySync:
    """``_restore_policies``, ``_policy_stored`` and ``_refresh_policies``."""

    store: Any
    core: Any
    _next_policy_refresh = 0.0  # time.monotonic() of the next _refresh_policies
    _policy_changes = 0  # this head's own policy writes so far: a refresh that overlapped one is not applied

    def _restore_policies(self) -> list[str]:
        """Install every coop's active policy from the store (the core has none yet). Returns the coops whose
        active version is damaged in the store (they, and those whose version this head refuses, have no policy
        here)."""
        self._policy_versions: dict[str, int] = {}  # coop -> the store version this head decides by (or refused)
        self._next_policy_refresh = time.monotonic() + POLICY_REFRESH_S
        return [v.coop_id for v in self.store.active_policies() if not self._apply_stored(v, at_start=True) and v.damaged]

    def _policy_stored(self, coop_id: str, version: int | None) -> None:
        """This head wrote the coop's policy (``version``; None: removed it), and its core already holds it."""
        self._policy_changes += 1
        if version is None:
            self._policy_versions.pop(coop_id, None)
        else:
            self._policy_versions[coop_id] = version

    async def _policies_fresh(self) -> None:
        """Before an admission: refresh now if the watchdog has not lately (it starts with a head's first
        call, so a replica idle since its start would otherwise decide that call by its start-up policies)."""
        if time.monotonic() >= self._next_policy_refresh + POLICY_REFRESH_S:
            await self._refresh_policies()

    async def _refresh_policies(self) -> list[str]:
        """Take the policy versions set or removed through other heads since the last look (from the
        watchdog, every ``POLICY_REFRESH_S``). The store is read off the event loop; what was read is applied
        only if this head changed no policy meanwhile (else the next round reads again). Returns the coops
        whose policy changed here."""
        self._next_policy_refresh = time.monotonic() + POLICY_REFRESH_S
        before = self._policy_changes
        try:
            active = await asyncio.to_thread(self.store.active_policy_versions)
            known = self._policy_versions
            newer = {c: v for c, v in active.items() if known.get(c) != v}
            fetched = await asyncio.to_thread(self._versions, newer) if newer else []
        except Exception as exc:  # noqa: BLE001  # the store is away: keep deciding by what is held, try again
            log.warning("could not read the stored policies (%s: %s); deciding by the ones held until the store "
                        "answers", type(exc).__name__, exc)
            return []
        if self._policy_changes != before:  # a policy was set or removed through this head during the read
            return []
        changed = []
        for version in fetched:
            self._apply_stored(version, at_start=False)
            changed.append(version.coop_id)
        for coop_id in sorted(set(self._policy_versions) - set(active)):
            del self._policy_versions[coop_id]
            if self.core.remove_policy(coop_id) is not None:
                log.warning("policy of coop %s removed through another head on the store: its submissions are "
                            "refused until a policy is set again", coop_id)
            changed.append(coop_id)
        return changed

    def _versions(self, wanted: dict[str, int]) -> list[PolicyVersion]:
        out = []
        for coop_id, number in sorted(wanted.items()):
            version = self.store.policy_version(coop_id, number)
            if version is not None:  # (gone since the first read: the next round sees what replaced it)
                out.append(version)
        return out

    def _apply_stored(self, version: PolicyVersion, at_start: bool) -> bool:
        """Decide the coop's submissions by this stored version; False (and the coop left with no policy here,
        logged) if it cannot be used."""
        coop_id, number = version.coop_id, version.version
        self._policy_versions[coop_id] = number  # (a refused version is not read again until another replaces it)
        what = "not restored" if at_start else "not taken from the store"
        if version.damaged:  # no earlier version stands in: the one that replaced it may have taken something
            # away (a member, a quota, a rule), and the head cannot tell
            self.core.remove_policy(coop_id)
            log.error("policy of coop %s %s: its active version %d is damaged in the store (%s); the coop's "
                      "submissions are refused, and its queued jobs wait, until a coop admin sets a policy again "
                      "(`coopsched policy set FILE`; `coopsched policy history %s` lists the versions)",
                      coop_id, what, number, version.damaged, coop_id)
            return False
        try:
            self.core.set_policy(version.policy)
        except InvalidRequest as exc:  # e.g. a plug-in not installed here: the head goes on without the coop's
            self.core.remove_policy(coop_id)
            log.error("policy of coop %s (version %d) %s: %s; the coop's submissions are refused here until a "
                      "policy this head can use is set", coop_id, number, what, exc)
            return False
        if not at_start:
            log.info("policy of coop %s is now version %d (set through another head on the store)", coop_id, number)
        return True
