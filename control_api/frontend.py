"""The REST frontend: uvicorn serving :func:`create_app` on the device's event loop.

Registered as the ``rest`` entry point of the ``dpu_emu.frontends`` group, so
``dpu-emu serve`` starts it without dpu_emu importing this package.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn

from dpu_emu.domain.auth import load_admin_token
from dpu_emu.frontends import FrontendOptions

from .app import create_app

if TYPE_CHECKING:
    from dpu_emu.device import Device

log = logging.getLogger("control_api.frontend")
SHUTDOWN_TIMEOUT_S = 3
LISTEN_BACKLOG = 128


class RestFrontend:
    name = "rest"

    def __init__(self, options: FrontendOptions | None = None) -> None:
        self.options = options or FrontendOptions()
        self.server: uvicorn.Server | None = None
        self.sock: socket.socket | None = None
        self.port: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, device: Device) -> None:
        token = load_admin_token(self.options.admin_token_file)
        if token.generated is not None:
            # Printed once, on the terminal only (never logged): the file keeps it (0600).
            print(f"dpu-emu: generated the administrator token (saved to {token.path}, mode 0600):\n"
                  f"  {token.generated}", file=sys.stderr, flush=True)
        app = create_app(device, admin_digest=token.digest)
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S, server_header=False)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        family = socket.AF_INET6 if ":" in self.options.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.options.address, self.options.port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self.server, self.sock = server, sock
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(server.main_loop(), name="rest-frontend")
        log.info("REST API on http://%s:%d (OpenAPI /openapi.json, docs /docs; admin token from %s)",
                 self.options.address, self.port, token.source)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        await server.shutdown(sockets=[self.sock] if self.sock is not None else None)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
