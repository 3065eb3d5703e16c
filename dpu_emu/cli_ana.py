"""``dpu-emu ana show|set``: ANA groups and per-listener states over the REST API.

    dpu-emu ana show nqn.2026-11.io.dpu-emu:default
    dpu-emu ana set nqn.2026-11.io.dpu-emu:default --group 1 --listener 2 inaccessible
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cli_client

STATES = ("optimized", "non_optimized", "inaccessible", "persistent_loss", "change")


def _base(args: argparse.Namespace) -> str:
    return f"/v1/subsystems/{cli_client.q(args.subsystem)}/ana"


def handle(args: argparse.Namespace) -> Any:
    if args.action == "show":
        return cli_client.request(args, "GET", _base(args))
    return cli_client.request(args, "PUT", f"{_base(args)}/{args.group}/listeners/{args.listener}",
                              {"state": args.state})


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = cli_client._actions(sub, "ana", "ANA multipath: groups and per-listener states (REST)")
    s.add_parser("show", help="groups, their namespaces and their state on each listener").add_argument(
        "subsystem", help="subsystem NQN or id")
    p = s.add_parser("set", help="set a group's state on one listener (hosts get the ANA change event)")
    p.add_argument("subsystem", help="subsystem NQN or id")
    p.add_argument("--group", type=int, default=1, help="ANA group id (default 1)")
    p.add_argument("--listener", type=int, required=True, help="listener (port id)")
    p.add_argument("state", choices=STATES)
    for parser in s.choices.values():
        cli_client._common(parser)
