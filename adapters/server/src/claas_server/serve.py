"""``serve``: run the app with uvicorn (what ``claas serve`` calls).

Without API keys the server is open to anyone who can reach it, so it listens
only on loopback unless remote access is allowed explicitly
(``allow_remote=True`` or ``Settings.server.allow_remote_without_keys``).
"""

from __future__ import annotations

import ipaddress

from claas import Settings
from claas.errors import InvalidConfig

__all__ = ["check_host", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(settings: Settings, host: str, *, allow_remote: bool = False) -> None:
    """Refuse a non-loopback ``host`` when no API keys are configured.

    Raises:
        InvalidConfig: The server would be reachable from other machines with no
            key required, and that was not explicitly allowed.
    """
    if settings.server.api_keys or is_loopback(host):
        return
    if allow_remote or settings.server.allow_remote_without_keys:
        return
    raise InvalidConfig(
        f"refusing to listen on {host!r} without API keys: anyone who can reach it could "
        "read and change every adapter. Configure keys (CLAAS_API_KEYS), listen on "
        "127.0.0.1, or allow it explicitly (allow_remote=True, `claas serve "
        "--allow-remote`, or CLAAS_ALLOW_REMOTE_WITHOUT_KEYS=true)"
    )


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_remote: bool = False,
    log_level: str = "info",
    worker: bool = True,
) -> None:
    """Serve the API and dashboard until interrupted.

    Args:
        settings: Installation settings (default ``Settings.load()``).
        host: Interface to listen on; non-loopback needs API keys or ``allow_remote``.
        port: TCP port.
        allow_remote: Listen beyond loopback even without API keys.
        log_level: uvicorn's log level.
        worker: Apply feedback jobs in this process; ``False`` serves the API
            only, beside ``claas worker`` processes on the same database.

    Raises:
        InvalidConfig: A non-loopback host without keys and without permission.
    """
    import uvicorn

    from claas_server.app import create_app

    settings = settings if settings is not None else Settings.load()
    check_host(settings, host, allow_remote=allow_remote)
    if not worker:
        settings = settings.evolve(jobs={"worker": "off"})
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
