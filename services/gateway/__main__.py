"""`python -m services.gateway`: serve the REST gateway on every configured port until SIGTERM."""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    logging.basicConfig(level=os.environ.get("TALKSERVE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings()
    sockets = [bind(settings.host, port) for port in settings.ports]
    config = uvicorn.Config(create_app(settings), log_level="info", access_log=settings.access_log,
                            timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
