"""The network gate for Hugging Face sources and tokenizers: fail at once, clearly, when offline.

Nothing in capscale touches the network unless a user asks for a hub source. When they do and
the machine is offline (``HF_HUB_OFFLINE`` and friends, or the hub cannot be reached within a
few seconds), the request stops with a :class:`CapscaleError` that says what is missing,
instead of hanging in a retry loop deep inside ``datasets``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from urllib.parse import urlparse

from capscale.errors import CapscaleError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0


def offline_flag() -> str | None:
    """The name of the first offline environment variable that is set to a true value."""
    for name in OFFLINE_VARS:
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return name
    return None


def hub_address() -> tuple[str, int]:
    """(host, port) a hub request would connect to first: the HTTPS proxy if one is set."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to (host, port) opens within ``timeout`` seconds, else why not.

    Name resolution can block far longer than a socket timeout, so the attempt runs in a
    daemon thread that is simply abandoned when time is up.
    """
    result: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else f"no answer within {timeout:g} s"


def require_package(module: str, what: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise CapscaleError(f"{what} needs the '{module}' package, which is not installed: {install}")


def require_online(what: str) -> None:
    """Raise at once unless the Hugging Face hub looks reachable."""
    flag = offline_flag()
    if flag:
        raise CapscaleError(
            f"{what} downloads from the Hugging Face hub, but {flag}={os.environ[flag]} says this "
            "machine is offline; use a builtin source (builtin:wiki) or local files, or unset "
            f"{flag} on a machine with network access"
        )
    host, port = hub_address()
    why = probe(host, port)
    if why is not None:
        raise CapscaleError(
            f"{what} downloads from the Hugging Face hub, but {host}:{port} cannot be reached "
            f"({why}); this machine looks offline. Use a builtin source (builtin:wiki) or local "
            "files, or run where the hub is reachable"
        )
