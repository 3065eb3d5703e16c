"""``dpu-emu`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from . import config as cfgmod
from .device import Device

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpu-emu", description="BlueField-4 style NVMe/TCP storage emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the emulator (embedded default config unless --config)")
    serve.add_argument("--config", help="JSON configuration file (ports / subsystems / hosts)")
    serve.add_argument("--address", help="listen address for every port (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="NVMe/TCP I/O port (default 4420; 0 = ephemeral)")
    serve.add_argument("--discovery-port", type=int, help="discovery-only port (default 8009)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    show = sub.add_parser("default-config", help="print the embedded default configuration")
    show.set_defaults(command="default-config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "default-config":
        json.dump(cfgmod.default_config(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    try:
        cfg = cfgmod.load_config(args.config) if args.config else cfgmod.default_config()
        cfg = cfgmod.with_overrides(cfg, address=args.address, port=args.port,
                                    discovery_port=args.discovery_port)
        device = Device(cfg)
    except (cfgmod.ConfigError, OSError, ValueError) as exc:
        print(f"dpu-emu: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(device.run_forever())
    except OSError as exc:
        print(f"dpu-emu: {exc}", file=sys.stderr)
        return 1
    return 0
