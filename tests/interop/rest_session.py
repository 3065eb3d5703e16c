"""A `dpu-emu serve` subprocess with its REST API for one interop module, and checked REST calls.

The VM tests that change the target while the guest runs (host actions) all need the same
things: start the server with an administrator token, an httpx client on its REST URL, and
a REST call that fails loudly (method, path, status, body) when the answer is not the one
expected.  The guest-side assertions shared by those modules live here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import httpx
import pytest

from .dpu_emu_proc import DpuEmuProcess
from .support import GuestChecks

HTTP_TIMEOUT_S: Final[float] = 10.0


@dataclass(frozen=True)
class RestServer:
    process: DpuEmuProcess
    client: httpx.Client


@contextmanager
def rest_server(process: DpuEmuProcess, token: str, *, timeout: float = HTTP_TIMEOUT_S) -> Iterator[RestServer]:
    """Starts ``process`` (built with ``rest_token=token``), yields it with a client; closes both."""
    try:
        print(f"\n[interop] {process.start()}; REST {process.rest_url}; log {process.log_path}")
    except RuntimeError as exc:
        process.close()
        pytest.fail(str(exc), pytrace=False)
    client = httpx.Client(base_url=process.rest_url, headers={"Authorization": f"Bearer {token}"},
                          timeout=timeout)
    try:
        yield RestServer(process, client)
    finally:
        client.close()
        process.close()


def expect(resp: httpx.Response, status: int) -> httpx.Response:
    """``resp`` when its status is ``status``; else a RuntimeError naming the call and the answer."""
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
    return resp


def called(resp: httpx.Response, status: int) -> str:
    """:func:`expect`, then a one-line record of the call for a host action's summary."""
    expect(resp, status)
    return f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}"


def assert_guest_completed(run: GuestChecks, checks: Iterable[str]) -> None:
    """The guest reported every check of ``checks`` (and no other) and exited 0."""
    result, report = run
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert sorted(report.results) == sorted(checks)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"
