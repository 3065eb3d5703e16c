"""Schemas of /v1/listeners/{id}/capture (packet capture to a pcap file)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .schemas import Strict

FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class CaptureStart(Strict):
    file: str = Field(min_length=1, max_length=128, pattern=FILE_PATTERN,
                      description="a plain file name, written in the device's capture directory "
                                  "(no directories, no '..')")
    max_bytes: int | None = Field(None, ge=4096, le=16 << 30,
                                  description="stop capturing before the file exceeds this size (default 256 MiB)")
    max_packets: int | None = Field(None, ge=1, le=100_000_000,
                                    description="stop capturing after this many packets (default 1,000,000)")


class CapturePublic(BaseModel):
    listener: int
    file: str | None = Field(description="the file name in the capture directory; null if never captured")
    active: bool
    packets: int
    bytes: int = Field(description="bytes written to the file, pcap header included")
    truncated: bool = Field(description="a bound was reached: capture stopped early")
    max_bytes: int | None
    max_packets: int | None
    connections: int = Field(description="connections seen by this capture")
    stopped_reason: str | None
