"""The real CLI and ``Client`` talking to the real ``Head`` class (not its Ray actor), in-process.

The head runs on an event loop of its own thread; only ``Client._call`` is replaced, to await the
head's method directly (with the ``_request`` envelope a Ray call carries) and unwrap the answer
as the real client does, so the head's exceptions reach the CLI as they would through Ray.
No Ray cluster is started.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

from scheduler import cli_commands
from scheduler.cli import main
from policies.reasons import Decision
from scheduler.client import Client
from scheduler.job_handle import JobHandle
from scheduler.head import Head

_stores = itertools.count()


class ThreadedHead:
    def __init__(self, store_url: str | None = None, auth: dict | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.head: Head = self.do(self._make(store_url or f"memory://in-process-{next(_stores)}", auth))

    @staticmethod
    async def _make(url: str, auth: dict | None = None) -> Head:
        head = Head.__new__(Head)
        await Head.__init__(head, store_url=url, auth=auth)
        head._watchdog = object()  # no background watchdog
        return head

    def do(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, method: str, *args, **kwargs):
        return self.do(getattr(self.head, method)(*args, **kwargs))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class InProcessClient(Client):
    def __init__(self, th: ThreadedHead) -> None:  # (no Ray: nothing of Client.__init__ is needed)
        self.namespace, self._key, self.public_key, self.dev_mode, self._labelled = "in-process", None, None, None, True
        self.th = th

    def _call(self, method: str, *args, **kwargs):
        answer = self.th.do(getattr(self.th.head, method)(*args, _request={"signed": None}, **kwargs))
        return self._unwrap(answer)


def handle(client: Client, task_id: str, coop_id: str) -> JobHandle:
    """A handle on a job the test submitted to the head directly."""
    return JobHandle(client, Decision(task_id=task_id, coop_id=coop_id, admitted=True))


def cli(th: ThreadedHead, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``coopsched ARGV`` against ``th``'s head: (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli_commands, "client_for", lambda args: InProcessClient(th))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
