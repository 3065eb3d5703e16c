"""``dpu-emu capture start|status|stop``: per-listener packet capture over the REST API.

    dpu-emu capture start 1 session.pcap --max-bytes 64M
    dpu-emu capture status 1
    dpu-emu capture stop 1

The file is a plain name written in the device's capture directory (``capture.dir`` in the
configuration, else ``<--data-dir>/captures``); decode it with
``tshark -r FILE -d tcp.port==PORT,nvme-tcp``.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cli_client


def _path(args: argparse.Namespace) -> str:
    return f"/v1/listeners/{args.listener}/capture"


def handle(args: argparse.Namespace) -> Any:
    if args.action == "start":
        body = cli_client._drop_none({"file": args.file, "max_bytes": args.max_bytes,
                                      "max_packets": args.max_packets})
        return cli_client.request(args, "POST", _path(args), body)
    if args.action == "status":
        return cli_client.request(args, "GET", _path(args))
    return cli_client.request(args, "DELETE", _path(args))


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = cli_client._actions(sub, "capture", "per-listener packet capture to a pcap file (REST)")
    p = s.add_parser("start", help="capture a listener's connections")
    p.add_argument("listener", type=int, help="listener (port) id")
    p.add_argument("file", help="plain file name in the device's capture directory")
    p.add_argument("--max-bytes", type=cli_client.parse_size, help="stop before the file exceeds this (e.g. 64M)")
    p.add_argument("--max-packets", type=int, help="stop after this many packets")
    for action, text in (("status", "capture status"), ("stop", "stop and flush; the final status")):
        s.add_parser(action, help=text).add_argument("listener", type=int, help="listener (port) id")
    for p in s.choices.values():
        cli_client._common(p)
