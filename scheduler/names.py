"""Where Coopsched's actors live in a Ray cluster: one namespace, well-known names."""

NAMESPACE = "coopsched"
HEAD_NAME = "coopsched-head"
TRACKER_NAME = "coopsched-tracker"
WORKER_PREFIX = "coopsched-worker:"


def worker_name(executor_id: str) -> str:
    return WORKER_PREFIX + executor_id
