"""``dpu-emu`` command line: ``serve`` runs the device; the resource subcommands
(``subsystem``, ``namespace``, ``host``, ``listener``, ``tenant``, ``stats``) call a running
device's REST API (see :mod:`dpu_emu.cli_client`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import cli_client
from . import config as cfgmod
from .device import Device
from .frontends import DEFAULT_REST_ADDRESS, DEFAULT_REST_PORT, FrontendError, FrontendOptions, load_frontends

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
REST_FRONTEND = "rest"
log = logging.getLogger("dpu_emu.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpu-emu", description="BlueField-4 style NVMe/TCP storage emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the emulator (embedded default config unless --config)")
    serve.add_argument("--config", help="JSON configuration file: restored on start, every accepted change is "
                                        "saved to it (created from the default when absent)")
    serve.add_argument("--address", help="listen address for every port (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="NVMe/TCP I/O port (default 4420; 0 = ephemeral)")
    serve.add_argument("--discovery-port", type=int, help="discovery-only port (default 8009)")
    serve.add_argument("--rest-address", default=DEFAULT_REST_ADDRESS, help="REST API address (default %(default)s)")
    serve.add_argument("--rest-port", type=int, default=DEFAULT_REST_PORT, help="REST API port (default %(default)s)")
    serve.add_argument("--no-rest", action="store_true", help="do not serve the REST API")
    serve.add_argument("--admin-token-file", type=Path,
                       help="administrator bearer token file (default: $DPU_EMU_ADMIN_TOKEN, else "
                            "~/.local/state/dpu-emu/admin-token, generated with mode 0600 if absent)")
    serve.add_argument("--data-dir", type=Path,
                       help="file backends must lie under this directory (relative paths resolve there)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    show = sub.add_parser("default-config", help="print the embedded default configuration")
    show.set_defaults(command="default-config")
    cli_client.add_subcommands(sub)
    return parser


def _load(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The configuration to start from, and whether it must be written out (new file)."""
    if not args.config:
        return cfgmod.default_config(), False
    path = Path(args.config)
    if not path.exists():
        log.warning("%s does not exist: starting from the default configuration and saving it there", path)
        return cfgmod.default_config(), True
    return cfgmod.load_config(path), False


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    try:
        cfg, create = _load(args)
        cfg = cfgmod.with_overrides(cfg, address=args.address, port=args.port,
                                    discovery_port=args.discovery_port)
        options = FrontendOptions(address=args.rest_address, port=args.rest_port,
                                  admin_token_file=args.admin_token_file)
        frontends = load_frontends(options, exclude=frozenset({REST_FRONTEND}) if args.no_rest else frozenset())
        if not args.no_rest and not any(f.name == REST_FRONTEND for f in frontends):
            log.warning("the REST frontend is not installed: no management API (use --no-rest to silence)")
        device = Device(cfg, config_path=args.config, frontends=frontends, data_dir=args.data_dir)
        if create:
            device.services.save()
    except cfgmod.ConfigError as exc:
        print(f"dpu-emu: configuration refused: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (FrontendError, OSError, ValueError) as exc:
        print(f"dpu-emu: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.config is None:
        log.warning("no --config: changes made through the API are not saved")
    try:
        asyncio.run(device.run_forever())
    except OSError as exc:
        print(f"dpu-emu: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "default-config":
        json.dump(cfgmod.default_config(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if args.command == "serve":
        return serve(args)
    return cli_client.run(args)
