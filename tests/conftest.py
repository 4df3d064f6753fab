"""Test-session settings shared by the unit and integration tests.

Hypothesis draws the same examples on every run by default (``derandomize``), so a run of
``make test`` (and CI) passes or fails on the code alone, never on the luck of the draw.
To search for new failures, draw fresh random examples:
``HYPOTHESIS_PROFILE=explore make test`` (or ``pytest --hypothesis-profile=explore``).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# The test plug-ins (tests/fixtures/rule_plugins.py) are named by dotted path, which a head accepts
# only inside the packages its operator lists (policies.plugins.PLUGIN_MODULES_ENV).
os.environ.setdefault("COOPSCHED_PLUGIN_MODULES", "tests.fixtures")
