"""/metrics shows what the transport limits did: refused connections, ICReq timeouts, live connections."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Final

from .conftest import LOOPBACK, ApiDevice, small_config
from .test_auth import setup_two_tenants

ICREQ_TIMEOUT_S: Final[float] = 0.3
WAIT_S: Final[float] = 10.0
POLL_S: Final[float] = 0.05


def _metric(text: str, name: str, labels: str = "") -> int:
    match = re.search(rf"^{re.escape(name + labels)} (\d+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics:\n{text}"
    return int(match.group(1))


def _until(api: ApiDevice, predicate: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        text = api.client.get("/metrics").text
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(POLL_S)


def test_metrics_count_refusals_and_icreq_timeouts(make_api: Callable[..., ApiDevice]) -> None:
    cfg = small_config()
    cfg["transport"] = {**cfg.get("transport", {}), "max_connections_per_listener": 1,
                        "icreq_timeout_s": ICREQ_TIMEOUT_S}
    api = make_api(cfg)
    text = api.client.get("/metrics").text
    assert _metric(text, "dpu_emu_transport_connections") == 0
    assert _metric(text, "dpu_emu_transport_icreq_timeouts_total") == 0
    assert _metric(text, "dpu_emu_transport_backpressure_pauses_total") == 0

    silent = socket.create_connection((LOOPBACK, api.io_port))  # holds the listener's one slot, sends nothing
    extra = socket.create_connection((LOOPBACK, api.io_port))  # over the limit: closed at once
    try:
        extra.settimeout(WAIT_S)
        assert extra.recv(1) == b"", "a connection over the limit is closed without a byte"
        silent.settimeout(WAIT_S)
        assert silent.recv(1) == b"", "a connection with no ICReq is closed at the deadline"
    finally:
        extra.close()
        silent.close()
    text = _until(api, lambda t: "dpu_emu_transport_icreq_timeouts_total 1" in t
                  and "dpu_emu_transport_connections 0" in t)
    assert _metric(text, "dpu_emu_transport_icreq_timeouts_total") == 1
    assert _metric(text, "dpu_emu_transport_connections") == 0
    refused = re.findall(r'^dpu_emu_transport_refused_connections_total\{listener="(\d+)"\} (\d+)$', text,
                         re.MULTILINE)
    assert sum(int(n) for _, n in refused) == 1, refused


def test_transport_metrics_are_for_administrators_only(api: ApiDevice) -> None:
    blue, _ = setup_two_tenants(api)
    assert "dpu_emu_transport_connections" in api.client.get("/metrics").text
    with api.client_with(blue) as client:
        text = client.get("/metrics").text
    assert "dpu_emu_namespace_ops_total" in text and "dpu_emu_transport_" not in text
