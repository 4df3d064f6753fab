"""Cooperative scheduling policies: models, built-in rules, loading, example files."""

from policies.expression import ExpressionRule
from policies.loader import load_example, load_policy
from policies.model import CoopPolicy, CoopQuota, EnforcementMode, MemberQuota, ResourceAmounts, ScoringWeights
from policies.plugins import PluginRule
from policies.priority import Priority
from policies.rules import (DataSovereignty, ExecutorFilter, MemberPriority, RateLimit, RequireCapability,
                            TaskLimits, TimeWindow)
from policies.validation import InvalidRequest

__all__ = [
    "CoopPolicy",
    "CoopQuota",
    "DataSovereignty",
    "EnforcementMode",
    "ExecutorFilter",
    "ExpressionRule",
    "InvalidRequest",
    "MemberPriority",
    "MemberQuota",
    "PluginRule",
    "Priority",
    "RateLimit",
    "RequireCapability",
    "ResourceAmounts",
    "ScoringWeights",
    "TaskLimits",
    "TimeWindow",
    "load_example",
    "load_policy",
]
