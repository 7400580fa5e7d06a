"""Listening sockets shared by the simulator and the bridge's HTTP server."""

from __future__ import annotations

import socket


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (``port`` 0: a free one); ``OSError`` if it is taken.

    Callers bind before they start anything else, so a port clash fails early and cleanly.
    The protocol is given explicitly: asyncio only sets ``TCP_NODELAY`` on sockets whose
    protocol is ``IPPROTO_TCP``, and without it every answer waits for a delayed ACK (~40 ms).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Return whether nothing listens on ``host:port`` (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
