"""``dpu-emu fault add|list|show|rm|clear``: fault injection over the REST API (/v1/faults).

    dpu-emu fault add status --sc 0x80 --opcode 0x02 --queue io --count 1
    dpu-emu fault add delay --delay-ms 200 --subsystem nqn... --probability 0.5 --seed 1
    dpu-emu fault add drop_connection --after-commands 10 --queue io
    dpu-emu fault add corrupt_c2h_digest --count 1
    dpu-emu fault add ignore_keep_alive --host nqn...
    dpu-emu fault add refuse_connection --listener 2
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cli_client

FAULT_TYPES = ("delay", "status", "drop_connection", "corrupt_c2h_digest", "ignore_keep_alive",
               "refuse_connection")
MATCH_OPTIONS = ("subsystem", "nsid", "host", "opcodes", "queue", "listener")
PARAM_OPTIONS = ("delay_ms", "sct", "sc", "after_commands")
BASE = "/v1/faults"


def _number(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal (opcodes and status codes are usually hex)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def handle(args: argparse.Namespace) -> Any:
    if args.action == "add":
        params = cli_client._drop_none({name: getattr(args, name) for name in PARAM_OPTIONS})
        if args.dnr:
            params["dnr"] = True
        body: dict[str, Any] = cli_client._drop_none({
            "type": args.type, "count": args.count, "probability": args.probability, "seed": args.seed,
            "match": cli_client._drop_none({name: getattr(args, name) for name in MATCH_OPTIONS}) or None,
            "params": params or None})
        return cli_client.request(args, "POST", BASE, body)
    if args.action == "list":
        return cli_client.request(args, "GET", BASE)
    if args.action == "show":
        return cli_client.request(args, "GET", f"{BASE}/{cli_client.q(args.id)}")
    if args.action == "rm":
        return cli_client.request(args, "DELETE", f"{BASE}/{cli_client.q(args.id)}")
    return cli_client.request(args, "DELETE", BASE)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = cli_client._actions(sub, "fault", "fault injection for initiator testing (REST)")
    p = s.add_parser("add", help="add a fault (acts at once)")
    p.add_argument("type", choices=FAULT_TYPES)
    m = p.add_argument_group("match (absent: anything)")
    m.add_argument("--subsystem", help="subsystem NQN")
    m.add_argument("--nsid", type=int)
    m.add_argument("--host", help="host NQN")
    m.add_argument("--opcode", dest="opcodes", type=_number, action="append", help="opcode (repeatable)")
    m.add_argument("--queue", choices=["admin", "io", "any"])
    m.add_argument("--listener", type=int, help="listener (port) id: connections that came in there")
    b = p.add_argument_group("how often")
    b.add_argument("--count", type=int, help="inject at most N times")
    b.add_argument("--probability", type=float, help="chance per match, in (0, 1]")
    b.add_argument("--seed", type=int, help="seed of the draws (reproducible runs)")
    k = p.add_argument_group("parameters")
    k.add_argument("--delay-ms", type=int, help="delay: completion held this long")
    k.add_argument("--sct", type=_number, help="status: status code type")
    k.add_argument("--sc", type=_number, help="status: status code")
    k.add_argument("--dnr", action="store_true", help="status: set Do Not Retry")
    k.add_argument("--after-commands", type=int, help="drop_connection: commands served before the drop")
    s.add_parser("list")
    for action in ("show", "rm"):
        s.add_parser(action).add_argument("id")
    s.add_parser("clear", help="remove every fault")
    for parser in s.choices.values():
        cli_client._common(parser)
