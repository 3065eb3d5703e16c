"""CLI subcommands that call a running device's REST API (stdlib HTTP client only).

Key material never goes on the command line (other users could read it from the process
list): ``dpu-emu key add --material-file PATH`` reads it from a file (64 raw bytes, or their
base64) or from standard input (``-``).

Exit codes: 0 success, 1 the API refused the request (its problem detail is printed),
2 bad usage, 3 the API could not be reached.  ``--json`` prints the API's JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from . import cli_ana, cli_auth, cli_capture, cli_faults
from .domain.auth import ADMIN_TOKEN_ENV, default_admin_token_file
from .frontends import DEFAULT_REST_ADDRESS, DEFAULT_REST_PORT

URL_ENV = "DPU_EMU_URL"
TOKEN_ENV = "DPU_EMU_TOKEN"
DEFAULT_URL = f"http://{DEFAULT_REST_ADDRESS}:{DEFAULT_REST_PORT}"
TIMEOUT_S = 30.0
EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {detail}")


class UsageError(Exception):
    """Options that do not make a request (exit 2)."""


def parse_size(text: str) -> int:
    """'4096', '512M', '1G', '1GiB' -> bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = SIZE_SUFFIXES.get(t[-1:], 1) if t else 1
    digits = t[:-1] if t[-1:] in SIZE_SUFFIXES else t
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(digits) * mult


def ns_ref(text: str) -> dict[str, Any]:
    """'SUBSYSTEM:NSID' (the subsystem may itself contain ':')."""
    sub, sep, nsid = text.rpartition(":")
    if not sep or not sub or not nsid.isdigit():
        raise argparse.ArgumentTypeError(f"expected SUBSYSTEM:NSID, got {text!r}")
    return {"subsystem": sub, "nsid": int(nsid)}


def _token(args: argparse.Namespace) -> str:
    for env in (TOKEN_ENV, ADMIN_TOKEN_ENV):
        if os.environ.get(env):
            return os.environ[env].strip()
    path = Path(args.token_file) if args.token_file else default_admin_token_file()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"dpu-emu: no token: set {TOKEN_ENV} or pass --token-file ({exc})") from None


def request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {_token(args)}",
                                          "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        raise ApiFailure(exc.code, payload) from None
    if not raw:
        return None
    return json.loads(raw)


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# -- commands ------------------------------------------------------------------------------

def _subsystem(args: argparse.Namespace) -> Any:
    if args.action == "add":
        return request(args, "POST", "/v1/subsystems", _drop_none({
            "nqn": args.nqn, "id": args.id, "serial": args.serial, "model": args.model,
            "max_namespaces": args.max_namespaces, "allow_any_host": args.allow_any_host, "hosts": args.host or []}))
    if args.action == "list":
        return request(args, "GET", "/v1/subsystems")
    if args.action == "show":
        return request(args, "GET", f"/v1/subsystems/{q(args.subsystem)}")
    return request(args, "DELETE", f"/v1/subsystems/{q(args.subsystem)}")


def _namespace(args: argparse.Namespace) -> Any:
    base = f"/v1/subsystems/{q(args.subsystem)}/namespaces"
    if args.action == "add":
        backend = {"kind": "file", "path": args.file} if args.file else {"kind": "ram"}
        spec = {"nsid": args.nsid, "backend": backend, "command_set": "kv" if args.kv else "nvm"}
        if args.kv:
            spec.update(capacity_bytes=args.capacity, max_value_size=args.max_value_size, mode=args.mode)
        else:
            spec.update(size_bytes=args.size, block_size=args.block_size, key=args.key,
                        integrity=True if args.integrity else None)
        spec["qos"] = args.qos
        return request(args, "POST", base, _drop_none(spec))
    if args.action == "list":
        return request(args, "GET", base)
    if args.action == "show":
        return request(args, "GET", f"{base}/{args.nsid}")
    return request(args, "DELETE", f"{base}/{args.nsid}")


def _host(args: argparse.Namespace) -> Any:
    base = f"/v1/subsystems/{q(args.subsystem)}/hosts"
    try:
        if args.action == "add":
            return request(args, "POST", base, {"nqn": args.hostnqn, **cli_auth.body(args)})
        if args.action == "dhchap":
            return cli_auth.dhchap(args, request, base, q(args.hostnqn))
    except cli_auth.SecretFileError as exc:
        raise UsageError(str(exc)) from None
    if args.action == "list":
        return request(args, "GET", base)
    return request(args, "DELETE", f"{base}/{q(args.hostnqn)}")


def _listener(args: argparse.Namespace) -> Any:
    if args.action == "add":
        return request(args, "POST", "/v1/listeners", _drop_none({
            "id": args.id, "traddr": args.address, "trsvcid": args.port,
            "discovery": not args.io_only, "io": not args.discovery_only}))
    if args.action == "list":
        return request(args, "GET", "/v1/listeners")
    return request(args, "DELETE", f"/v1/listeners/{args.id}")


def _tenant(args: argparse.Namespace) -> Any:
    if args.action == "add":
        return request(args, "POST", "/v1/tenants", _drop_none({
            "name": args.name, "hosts": args.host or [], "namespaces": args.namespace or [], "qos": args.qos}))
    if args.action == "list":
        return request(args, "GET", "/v1/tenants")
    if args.action == "show":
        return request(args, "GET", f"/v1/tenants/{q(args.name)}")
    if args.action == "token":
        return request(args, "POST", f"/v1/tenants/{q(args.name)}/token")
    return request(args, "DELETE", f"/v1/tenants/{q(args.name)}")


def _controller(args: argparse.Namespace) -> Any:
    if args.action == "list":
        return request(args, "GET", "/v1/controllers")
    return request(args, "DELETE", f"/v1/controllers/{q(args.id)}")


def _stats(args: argparse.Namespace) -> Any:
    return request(args, "GET", "/v1/stats")


POLICY_FIELDS = (("rw_ios", "rw_ios_per_sec"), ("rw_mbytes", "rw_mbytes_per_sec"),
                 ("r_mbytes", "r_mbytes_per_sec"), ("w_mbytes", "w_mbytes_per_sec"), ("weight", "weight"),
                 ("burst_ms", "burst_ms"))
XTS_KEY_BYTES = 64
STDIN_NAME = "-"


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    return _drop_none({api: getattr(args, opt) for opt, api in POLICY_FIELDS})


def _qos(args: argparse.Namespace) -> Any:
    if args.action == "stats":
        return request(args, "GET", "/v1/qos")
    if args.action == "namespace":
        limits = _limits(args)
        if sum(bool(x) for x in (args.policy, args.unlimited, limits)) != 1:
            raise UsageError("give exactly one of --policy NAME, --unlimited, or limits (--rw-ios ...)")
        spec: Any = args.policy or (None if args.unlimited else limits)
        return request(args, "PATCH", f"/v1/subsystems/{q(args.subsystem)}/namespaces/{args.nsid}", {"qos": spec})
    base = "/v1/qos/policies"
    if args.action == "add":
        return request(args, "POST", base, {"name": args.name, **_limits(args)})
    if args.action == "set":
        changes = _limits(args)
        if not changes:
            raise UsageError("nothing to change: give at least one limit (--rw-ios ...)")
        return request(args, "PATCH", f"{base}/{q(args.name)}", changes)
    if args.action == "list":
        return request(args, "GET", base)
    if args.action == "show":
        return request(args, "GET", f"{base}/{q(args.name)}")
    return request(args, "DELETE", f"{base}/{q(args.name)}")


def read_material(source: str) -> str:
    """Key material from a file or stdin ('-'): 64 raw bytes, or base64 text -> base64."""
    try:
        raw = sys.stdin.buffer.read() if source == STDIN_NAME else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the key material: {exc.strerror}") from None
    if len(raw) == XTS_KEY_BYTES:
        return base64.b64encode(raw).decode("ascii")
    return raw.strip().decode("ascii", errors="replace")


def _key(args: argparse.Namespace) -> Any:
    if args.action == "add":
        body = _drop_none({"id": args.id})
        if args.material_file:
            body["material"] = read_material(args.material_file)
        return request(args, "POST", "/v1/keys", body)
    if args.action == "list":
        return request(args, "GET", "/v1/keys")
    if args.action == "show":
        return request(args, "GET", f"/v1/keys/{q(args.id)}")
    return request(args, "DELETE", f"/v1/keys/{q(args.id)}")


HANDLERS = {"subsystem": _subsystem, "namespace": _namespace, "host": _host, "listener": _listener,
            "tenant": _tenant, "controller": _controller, "stats": _stats, "qos": _qos, "key": _key,
            "fault": cli_faults.handle, "capture": cli_capture.handle, "ana": cli_ana.handle}


def _print_human(result: Any) -> None:
    if result is None:
        print("ok")
        return
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        if isinstance(row, dict):
            print("  ".join(f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}" for k, v in row.items()))
        else:
            print(row)


def run(args: argparse.Namespace) -> int:
    try:
        result = HANDLERS[args.command](args)
    except ApiFailure as exc:
        if args.json:
            json.dump(exc.body, sys.stderr, indent=2)
            sys.stderr.write("\n")
        else:
            print(f"dpu-emu: {exc}", file=sys.stderr)
        return EXIT_API
    except UsageError as exc:
        print(f"dpu-emu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (urllib.error.URLError, OSError) as exc:
        print(f"dpu-emu: cannot reach the REST API at {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print_human(result)
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"REST API (${URL_ENV})")
    p.add_argument("--token-file", help=f"bearer token file (default ${TOKEN_ENV}, ${ADMIN_TOKEN_ENV}, or the "
                                        "administrator token file)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")


def _actions(parent: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    p = parent.add_parser(name, help=help_text)
    return p.add_subparsers(dest="action", required=True)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = _actions(sub, "subsystem", "subsystems (REST)")
    p = s.add_parser("add")
    p.add_argument("nqn")
    p.add_argument("--id")
    p.add_argument("--serial")
    p.add_argument("--model")
    p.add_argument("--max-namespaces", type=int)
    p.add_argument("--allow-any-host", action="store_true")
    p.add_argument("--host", action="append", help="allowed host NQN (repeatable)")
    for action in ("list", "show", "remove"):
        p = s.add_parser(action)
        if action != "list":
            p.add_argument("subsystem", help="NQN or id")
    for p in s.choices.values():
        _common(p)

    s = _actions(sub, "namespace", "namespaces of a subsystem (REST)")
    p = s.add_parser("add")
    p.add_argument("subsystem")
    p.add_argument("--nsid", type=int)
    p.add_argument("--size", type=parse_size, help="NVM namespace size (e.g. 1G)")
    p.add_argument("--block-size", type=int)
    p.add_argument("--kv", action="store_true", help="a KV command set namespace")
    p.add_argument("--capacity", type=parse_size, help="KV capacity (e.g. 256M)")
    p.add_argument("--max-value-size", type=parse_size)
    p.add_argument("--mode", choices=["strict", "cache"])
    p.add_argument("--file", help="file backend path (default: RAM)")
    p.add_argument("--qos", help="QoS policy name")
    p.add_argument("--integrity", action="store_true", help="CRC32C tag per block (NVM)")
    p.add_argument("--key", help="encrypt with this data key (AES-256-XTS; implies --integrity)")
    p = s.add_parser("list")
    p.add_argument("subsystem")
    for action in ("show", "remove"):
        p = s.add_parser(action)
        p.add_argument("subsystem")
        p.add_argument("nsid", type=int)
    for p in s.choices.values():
        _common(p)

    s = _actions(sub, "host", "hosts allowed on a subsystem (REST)")
    for action in ("add", "list", "remove", "dhchap"):
        p = s.add_parser(action)
        p.add_argument("subsystem")
        if action != "list":
            p.add_argument("hostnqn")
        if action in ("add", "dhchap"):
            cli_auth.add_arguments(p, action)
        _common(p)

    s = _actions(sub, "listener", "NVMe/TCP listeners (REST)")
    p = s.add_parser("add")
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", type=int)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--discovery-only", action="store_true")
    only.add_argument("--io-only", action="store_true")
    s.add_parser("list")
    p = s.add_parser("remove")
    p.add_argument("id", type=int)
    for p in s.choices.values():
        _common(p)

    s = _actions(sub, "tenant", "tenants (REST)")
    p = s.add_parser("add")
    p.add_argument("name")
    p.add_argument("--host", action="append", help="host NQN acting for the tenant (repeatable)")
    p.add_argument("--namespace", action="append", type=ns_ref, help="SUBSYSTEM:NSID it may see (repeatable)")
    p.add_argument("--qos", help="QoS policy reference")
    s.add_parser("list")
    for action in ("show", "remove", "token"):
        s.add_parser(action).add_argument("name")
    for p in s.choices.values():
        _common(p)

    s = _actions(sub, "controller", "live controllers (REST)")
    s.add_parser("list")
    s.add_parser("remove").add_argument("id")
    for p in s.choices.values():
        _common(p)

    _common(sub.add_parser("stats", help="I/O statistics (REST)"))
    _qos_and_key_subcommands(sub)
    cli_faults.add_subcommands(sub)
    cli_capture.add_subcommands(sub)
    cli_ana.add_subcommands(sub)


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rw-ios", type=float, help="rw_ios_per_sec (0 = unlimited)")
    p.add_argument("--rw-mbytes", type=float, help="rw_mbytes_per_sec (MiB/s)")
    p.add_argument("--r-mbytes", type=float, help="r_mbytes_per_sec (MiB/s)")
    p.add_argument("--w-mbytes", type=float, help="w_mbytes_per_sec (MiB/s)")
    p.add_argument("--weight", type=float, help="share of a saturated device")
    p.add_argument("--burst-ms", type=float, help="burst in milliseconds of the limit")


def _qos_and_key_subcommands(sub: argparse._SubParsersAction) -> None:
    s = _actions(sub, "qos", "QoS policies, namespace limits and telemetry (REST)")
    for action in ("add", "set"):
        p = s.add_parser(action, help=f"{'create' if action == 'add' else 'change'} a named policy")
        p.add_argument("name")
        _limit_options(p)
    s.add_parser("list")
    for action in ("show", "remove"):
        s.add_parser(action).add_argument("name")
    p = s.add_parser("namespace", help="set a namespace's QoS live")
    p.add_argument("subsystem")
    p.add_argument("nsid", type=int)
    p.add_argument("--policy", help="follow this named policy")
    p.add_argument("--unlimited", action="store_true", help="remove the namespace's limits")
    _limit_options(p)
    s.add_parser("stats", help="per-group QoS telemetry")
    for p in s.choices.values():
        _common(p)

    s = _actions(sub, "key", "data keys for encrypted namespaces (REST)")
    p = s.add_parser("add", help="generate a key, or import one with --material-file")
    p.add_argument("--id")
    p.add_argument("--material-file", help="64 raw bytes or their base64; '-' = stdin (never on the command line)")
    s.add_parser("list")
    for action in ("show", "remove"):
        s.add_parser(action).add_argument("id")
    for p in s.choices.values():
        _common(p)
