"""``_writes`` takes an InvalidRequest as "refused before anything changed" (no rollback, no rebuild);
register_executor raised one (the operator's own key offered as an executor's) after the core had
registered the executor: work went to an executor the store never got. The key is checked first now."""
from __future__ import annotations

import pytest

from policies.validation import InvalidRequest
from tests.unit.test_signed_head import A, OPERATOR, call, make_head, pub, run, spec


def test_an_executor_registration_refused_for_its_key_leaves_no_executor_behind():
    """The operator registers an executor giving the operator's own public key by mistake: refused
    (InvalidRequest from _add_key), but only after core.register_executor ran, so the refused executor
    stays in the head's table (work is placed on it) while the store never got it (a restart forgets it)."""
    async def main():
        h = await make_head()
        with pytest.raises(InvalidRequest, match="operator's key"):
            await call(h, OPERATOR, "register_executor", spec("eb", A), public_key=pub(OPERATOR))
        in_store = [s["executor_id"] for s, _ in h.store.executors()]
        assert "eb" not in in_store
        assert "eb" not in h.core.table, "a refused registration is live in memory, not in the store"
    run(main)
