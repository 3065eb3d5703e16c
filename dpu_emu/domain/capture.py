"""Packet capture per listener: start, status, stop (the pcap writer is nvmeof.target.capture).

The caller names a file, never a path: a plain name (letters, digits, ``.``, ``_``, ``-``,
no slash, no ``..``) resolved inside the capture directory, which is the configured
``capture.dir`` or ``<data dir>/captures``; without either, capture is unavailable.  The
file is opened without following symlinks.  Captures are bounded in bytes and packets and
are not part of the saved configuration (they end with the process).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nvmeof.target.capture import DEFAULT_MAX_BYTES, DEFAULT_MAX_PACKETS, CaptureStatus

from .errors import Conflict, InvalidArgument, NotFound, Unavailable
from .state import ADMIN, Scope, State, require_admin

CAPTURE_SUBDIR = "captures"
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_MAX_BYTES = 4096
MAX_MAX_BYTES = 16 << 30
MAX_MAX_PACKETS = 100_000_000


@dataclass(frozen=True)
class CaptureView:
    listener: int
    file: str | None
    active: bool
    packets: int
    bytes: int
    truncated: bool
    max_bytes: int | None
    max_packets: int | None
    connections: int
    stopped_reason: str | None


def _view(portid: int, status: CaptureStatus | None) -> CaptureView:
    if status is None:
        return CaptureView(listener=portid, file=None, active=False, packets=0, bytes=0, truncated=False,
                           max_bytes=None, max_packets=None, connections=0, stopped_reason=None)
    fields = asdict(status)
    fields.pop("started_at")
    return CaptureView(listener=portid, **fields)


def check_file_name(name: Any) -> str:
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument("file: a plain name of 1-128 letters, digits, '.', '_' or '-' "
                              "(no directories, no '..'), starting with a letter or digit")
    return name


class CaptureService:
    def __init__(self, state: State, capture_dir: Path | None = None) -> None:
        self.state = state
        self.capture_dir = capture_dir
        self._last: dict[int, CaptureStatus] = {}  # the status of each listener's last capture

    def directory(self) -> Path:
        if self.capture_dir is not None:
            return self.capture_dir
        if self.state.data_dir is None:
            raise Unavailable("packet capture needs a capture directory: set capture.dir in the "
                              "configuration or start dpu-emu with --data-dir")
        return self.state.data_dir / CAPTURE_SUBDIR

    def _listening(self, portid: int) -> None:
        if portid not in self.state.listeners:
            raise NotFound(f"no listener {portid}")
        if portid not in self.state.device.server.servers:
            raise Conflict(f"listener {portid} is not listening")

    def start(self, portid: int, file: str, max_bytes: int | None = None, max_packets: int | None = None,
              scope: Scope = ADMIN) -> CaptureView:
        require_admin(scope)
        self._listening(portid)
        name = check_file_name(file)
        max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        max_packets = DEFAULT_MAX_PACKETS if max_packets is None else max_packets
        if not MIN_MAX_BYTES <= max_bytes <= MAX_MAX_BYTES:
            raise InvalidArgument(f"max_bytes: {MIN_MAX_BYTES}..{MAX_MAX_BYTES}")
        if not 1 <= max_packets <= MAX_MAX_PACKETS:
            raise InvalidArgument(f"max_packets: 1..{MAX_MAX_PACKETS}")
        server = self.state.device.server
        running = server.captures.get(portid)
        if running is not None and running.active:
            raise Conflict(f"listener {portid} is already capturing to {running.name}")
        directory = self.directory()
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            status = server.start_capture(portid, str(directory / name), name=name, max_bytes=max_bytes,
                                          max_packets=max_packets)
        except OSError as exc:
            raise Conflict(f"cannot write capture file {name}: {exc.strerror or exc}") from None
        self._last[portid] = status
        return _view(portid, status)

    def status(self, portid: int, scope: Scope = ADMIN) -> CaptureView:
        require_admin(scope)
        if portid not in self.state.listeners:
            raise NotFound(f"no listener {portid}")
        running = self.state.device.server.captures.get(portid)
        if running is not None:
            self._last[portid] = running.status()
        return _view(portid, self._last.get(portid))

    def stop(self, portid: int, scope: Scope = ADMIN) -> CaptureView:
        """Stop and flush; the final status (404 when nothing was ever captured there)."""
        require_admin(scope)
        if portid not in self.state.listeners:
            raise NotFound(f"no listener {portid}")
        server = self.state.device.server
        if portid in server.captures:
            self._last[portid] = server.stop_capture(portid)
        elif portid not in self._last:
            raise NotFound(f"listener {portid} has no capture")
        return _view(portid, self._last[portid])
