"""Serving the explorer with uvicorn: bind the socket (127.0.0.1 unless told otherwise, with a warning when
other machines can connect), print the URL once the server answers, open the browser, stop cleanly on Ctrl-C.
"""
from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Any

from convnet._internal.checks import check_int, check_str
from convnet.explorer.session import Explorer

__all__ = ["serve", "bind", "is_loopback", "url_for", "LOOPBACK_NAMES"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")  # Host names a server on a loopback address answers to


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or "localhost": only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 takes a free one.

    Raises:
        ValueError: the address cannot be bound (in use, not this machine's, not allowed), saying what to do.
    """
    host = check_str("host", host)
    port = check_int("port", port, minimum=0, maximum=65535)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only for sockets created so;
    # without it, small answers wait ~40 ms for the client's delayed ACK (Nagle's algorithm)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host} port {port}: {error.strerror or error}; pass another --port "
                         f"(--port 0 picks a free one) or --host") from None
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    """The URL a browser on this machine opens for the server on `sock`."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # every address includes this machine's loopback one
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = True,
          announce: Callable[[str], Any] | None = None, **app_options: Any) -> None:
    """Serve the explorer until Ctrl-C (or SIGTERM); returns when the server has stopped.

    Args:
        explorer: what to show.
        host: the address to listen on; anything but a loopback address lets other machines connect, and is
            warned about on stderr.
        port: the TCP port; 0 takes a free one (the printed URL says which).
        open_browser: open the page in the default browser once the server answers.
        announce: called with the line giving the URL once the server answers; default: print it.
        app_options: passed to `create_app` (max_upload_bytes, max_pending).

    Raises:
        ValueError: the address cannot be bound. ImportError: uvicorn or starlette is not installed.
    """
    import uvicorn

    from convnet.explorer.app import create_app
    sock = bind(host, port)
    local = is_loopback(host)
    if not local:
        print(f"warning: convnet explore listens on {host}, so other machines can connect: anyone who reaches this "
              f"port can run the model and upload images. Use --host 127.0.0.1 (the default) unless you mean it.",
              file=sys.stderr, flush=True)
    allowed = [*LOOPBACK_NAMES, host] if local else None  # a loopback server answers to loopback names only
    app = create_app(explorer, allowed_hosts=allowed, **app_options)
    url = url_for(sock)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def when_ready() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        line = f"convnet explore: {explorer.source} at {url} (Ctrl-C stops)"
        if announce is None:
            print(line, flush=True)
        else:
            announce(line)
        if open_browser:
            webbrowser.open(url)

    threading.Thread(target=when_ready, name="convnet-explorer-ready", daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it has shut down
        pass
    finally:
        server.should_exit = True  # ends the thread waiting to announce, had the server never started
        sock.close()
