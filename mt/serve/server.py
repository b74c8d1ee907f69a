"""Binding the listening socket (first, so a busy port is one line before the model loads) and
running uvicorn on it."""

from __future__ import annotations

import ipaddress
import socket

import uvicorn

from mt.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: any free one); UserError if that is impossible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise UserError(f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def server_for(app, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for `app`; `.run(sockets=[sock])` serves until Ctrl-C or `.should_exit`."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10, server_header=False)
    return uvicorn.Server(config)
