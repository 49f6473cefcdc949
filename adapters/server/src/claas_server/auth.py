"""API keys bound to adapter namespaces.

With ``Settings.server.api_keys`` empty the server is open (and ``serve`` keeps it on
loopback). With keys configured, every route but ``/health`` needs
``Authorization: Bearer <key>``; a key may only see or change adapters whose
namespace it is bound to (``"*"`` binds all). The API's description
(``/openapi.json``, ``/docs``) stays public: it holds no data, and Swagger UI
could not fetch it otherwise. The dashboard also takes the key
from its login cookie or a ``?key=`` query parameter, for browsers.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against
every configured key without an early exit, so the time taken says nothing
about how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

import attrs

from claas.errors import PermissionDenied
from claas.types import validate_adapter_id
from claas_server.errors import Unauthorized

__all__ = ["ALL", "KeyRing", "Principal"]

ALL = "*"
COOKIE = "claas_key"


@attrs.frozen
class Principal:
    """Who is calling: the namespaces its key may use (``None``: every namespace)."""

    namespaces: frozenset[str] | None
    key_id: str | None = None

    def allows(self, adapter_id: str) -> bool:
        """Whether this caller may see and change ``adapter_id``."""
        if self.namespaces is None:
            return True
        namespace = adapter_id.split("/", 1)[0]
        return namespace in self.namespaces

    def require(self, adapter_id: str) -> str:
        """Validate ``adapter_id`` and check access; return it.

        Raises:
            InvalidAdapterId: If the id is malformed (checked first, so a 403
                never depends on whether an adapter exists).
            PermissionDenied: If the key is not bound to its namespace.
        """
        validate_adapter_id(adapter_id)
        if not self.allows(adapter_id):
            raise PermissionDenied(
                f"this API key may not use namespace {adapter_id.split('/', 1)[0]!r}"
            )
        return adapter_id

    def visible(self, adapter_ids: Iterable[str]) -> list[str]:
        """The ids this caller may see."""
        return [a for a in adapter_ids if self.allows(a)]


OPEN = Principal(namespaces=None)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The configured API keys, kept as digests."""

    def __init__(self, api_keys: Mapping[str, Sequence[str]]) -> None:
        self._keys = [
            (
                _digest(key),
                None if ALL in namespaces else frozenset(namespaces),
                _digest(key).hex()[:8],
            )
            for key, namespaces in api_keys.items()
        ]

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (otherwise every caller is let in)."""
        return bool(self._keys)

    def authenticate(self, key: str | None) -> Principal:
        """The principal of ``key``.

        Raises:
            Unauthorized: Keys are configured and ``key`` is missing or unknown.
        """
        if not self._keys:
            return OPEN
        if not key:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        presented = _digest(key)
        found: Principal | None = None
        for digest, namespaces, key_id in self._keys:
            if hmac.compare_digest(presented, digest):
                found = Principal(namespaces=namespaces, key_id=key_id)
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
