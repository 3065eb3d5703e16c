"""CLI for DH-HMAC-CHAP host settings: secrets are read from files, never from argv.

    dpu-emu host add SUB HOSTNQN --dhchap-key-file F [--dhchap-ctrl-key-file F]
                                 [--dhchap-hash sha384 ...] [--dhchap-dhgroup ffdhe3072 ...]
    dpu-emu host dhchap SUB HOSTNQN --dhchap-key-file F [...]     # set or rotate
    dpu-emu host dhchap SUB HOSTNQN --remove                       # stop requiring it

A secret on the command line would show in ``ps`` and shell history, so only files (or
'-' for stdin) are accepted; the secret goes to the API in the request body.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

STDIN_NAME = "-"


class SecretFileError(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser, action: str) -> None:
    p.add_argument("--dhchap-key-file", help="file holding the host's DHHC-1 secret ('-': stdin)")
    p.add_argument("--dhchap-ctrl-key-file", help="file holding the controller's DHHC-1 secret (bidirectional)")
    p.add_argument("--dhchap-hash", action="append", choices=["sha256", "sha384", "sha512"],
                   help="allowed hash, preferred first (repeatable)")
    p.add_argument("--dhchap-dhgroup", action="append",
                   choices=["null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"],
                   help="allowed DH group, preferred first (repeatable)")
    if action == "dhchap":
        p.add_argument("--remove", action="store_true", help="stop requiring DH-HMAC-CHAP from this host")


def _read(source: str) -> str:
    try:
        text = sys.stdin.read() if source == STDIN_NAME else Path(source).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read the secret file {source}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    return text.strip()


def body(args: argparse.Namespace) -> dict[str, Any]:
    """The DH-HMAC-CHAP part of a request body (empty when no option was given)."""
    out: dict[str, Any] = {}
    if args.dhchap_key_file:
        out["dhchap_key"] = _read(args.dhchap_key_file)
    if args.dhchap_ctrl_key_file:
        out["dhchap_ctrl_key"] = _read(args.dhchap_ctrl_key_file)
    if args.dhchap_hash:
        out["dhchap_hashes"] = args.dhchap_hash
    if args.dhchap_dhgroup:
        out["dhchap_dhgroups"] = args.dhchap_dhgroup
    return out


def dhchap(args: argparse.Namespace, request: Callable[..., Any], base: str, host_path: str) -> Any:
    path = f"{base}/{host_path}/dhchap"
    if args.remove:
        return request(args, "DELETE", path)
    spec = body(args)
    if "dhchap_key" in spec:
        return request(args, "PUT", path, spec)
    if not spec:
        return request(args, "GET", path)
    return request(args, "PATCH", path, spec)
