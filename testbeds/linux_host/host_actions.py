"""Host side of guest/lib/host_action.sh: the guest asks the host to do something mid-run.

The guest prints

    @@HOST-ACTION nonce=<this boot's nonce> id=<n> name=<action>@@

and waits (bounded) on /dev/console for

    @@HOST-DONE id=<n> status=<0 ok | 1 failed | 2 unknown action> detail=<one line>@@

`HostActions({"stop-target": fn, ...})` is an `on_line` callback for `vm.run_guest`: it runs the
named handler (a callable returning an optional detail string; an exception means failure) and
answers. Every request is recorded (`records`) with its host-side duration.

    actions = HostActions({"stop-target": server.stop, "start-target": server.start})
    result = run_guest(script, on_line=actions, timeout=300)
    assert not actions.errors()
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from .vm import GuestConsole

ACTION_PREFIX: Final[str] = "@@HOST-ACTION"
DONE_PREFIX: Final[str] = "@@HOST-DONE"
MARKER_SUFFIX: Final[str] = "@@"
STATUS_OK: Final[int] = 0
STATUS_FAILED: Final[int] = 1
STATUS_UNKNOWN: Final[int] = 2
DETAIL_MAX_CHARS: Final[int] = 200

_REQUEST = re.compile(
    "^" + re.escape(ACTION_PREFIX) + r" nonce=([0-9a-f]+) id=(\d+) name=([A-Za-z0-9_.-]+)"
    + re.escape(MARKER_SUFFIX) + "$"
)

Handler = Callable[[], "str | None"]


@dataclass(frozen=True)
class ActionRecord:
    id: int
    name: str
    status: int
    detail: str
    guest_seconds: float
    """When the request line arrived, seconds since qemu started."""
    host_seconds: float
    """How long the handler took."""


def done_line(action_id: int, status: int, detail: str) -> str:
    """The answer line; the detail is flattened to one line without '@' (no marker injection)."""
    flat = " ".join(detail.replace("@", " ").split())[:DETAIL_MAX_CHARS]
    return f"{DONE_PREFIX} id={action_id} status={status} detail={flat}{MARKER_SUFFIX}\n"


def parse_request(line: str) -> tuple[str, int, str] | None:
    """(nonce, id, name) of a request line, None for any other line."""
    match = _REQUEST.match(line.strip("\r").strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2)), match.group(3)


class HostActions:
    """An on_line callback that serves the guest's host_action requests, one at a time."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)
        self._lock = threading.Lock()
        self.records: list[ActionRecord] = []
        self.ignored: list[str] = []
        """Request lines with another boot's nonce (never acted upon)."""

    def __call__(self, line: str, console: GuestConsole) -> None:
        request = parse_request(line)
        if request is None:
            return
        nonce, action_id, name = request
        if nonce != console.nonce:
            self.ignored.append(line)
            return
        arrived = console.elapsed()
        console.note(f"host action {action_id} {name!r} requested")
        started = time.monotonic()
        handler = self._handlers.get(name)
        if handler is None:
            status, detail = STATUS_UNKNOWN, f"no host handler for {name!r}"
        else:
            try:
                status, detail = STATUS_OK, handler() or "done"
            except Exception as exc:  # noqa: BLE001 - reported to the guest and in records
                status, detail = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
        took = time.monotonic() - started
        console.note(f"host action {action_id} {name!r} status {status} in {took:.2f} s: {detail}")
        with self._lock:
            self.records.append(ActionRecord(action_id, name, status, detail, arrived, took))
        console.send(done_line(action_id, status, detail))

    def errors(self) -> list[ActionRecord]:
        with self._lock:
            return [r for r in self.records if r.status != STATUS_OK]

    def summary(self) -> str:
        with self._lock:
            return "\n".join(
                f"action {r.id} {r.name}: status {r.status} at guest+{r.guest_seconds:.1f} s, "
                f"host {r.host_seconds:.2f} s: {r.detail}" for r in self.records
            )
