"""The CLaaS exception tree.

Every error the library raises on purpose derives from :class:`ClaasError`, and
each subclass also inherits the standard-library exception it stands for, so
``except ValueError`` keeps working for callers who do not know CLaaS::

    ClaasError
    ├── InvalidRequest (ValueError)
    │   ├── InvalidAdapterId
    │   ├── InvalidConfig
    │   └── PayloadTooLarge
    ├── NotFound (LookupError)
    │   ├── AdapterNotFound
    │   ├── VersionNotFound
    │   └── CompletionNotFound
    ├── Conflict (RuntimeError)
    │   └── AdapterExists
    ├── PermissionDenied (PermissionError)
    ├── TrainingError (RuntimeError)
    │   └── NonFiniteUpdate
    ├── BackendUnavailable (ConnectionError)
    ├── StorageError (OSError)
    └── MissingDependency (ImportError)

The classes carry no state beyond their message, so they pickle and cross
process boundaries (Modal workers, multiprocessing) unchanged. HTTP status
codes are the server adapter's business, not this module's.
"""

from __future__ import annotations

__all__ = [
    "AdapterExists",
    "AdapterNotFound",
    "BackendUnavailable",
    "ClaasError",
    "CompletionNotFound",
    "Conflict",
    "InvalidAdapterId",
    "InvalidConfig",
    "InvalidRequest",
    "MissingDependency",
    "NonFiniteUpdate",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "StorageError",
    "TrainingError",
    "VersionNotFound",
]


class ClaasError(Exception):
    """Root of every error CLaaS raises on purpose."""


class InvalidRequest(ClaasError, ValueError):
    """The caller asked for something malformed; nothing was changed."""


class InvalidAdapterId(InvalidRequest):
    """An adapter id is not of the form ``namespace/name`` with allowed characters."""


class InvalidConfig(InvalidRequest):
    """A configuration value breaks its rule (the message names field, value and rule)."""


class PayloadTooLarge(InvalidRequest):
    """A prompt, response or request exceeds a configured limit."""


class NotFound(ClaasError, LookupError):
    """A named thing does not exist."""


class AdapterNotFound(NotFound):
    """No adapter with this id exists."""


class VersionNotFound(NotFound):
    """The adapter exists, but not this version of it (never written, or retired)."""


class CompletionNotFound(NotFound):
    """No served completion with this id is recorded."""


class Conflict(ClaasError, RuntimeError):
    """The request clashes with the current state."""


class AdapterExists(Conflict):
    """An adapter with this id already exists."""


class PermissionDenied(ClaasError, PermissionError):
    """The caller may not see or change this resource."""


class TrainingError(ClaasError, RuntimeError):
    """An update could not be computed; no version was published."""


class NonFiniteUpdate(TrainingError):
    """The loss or gradient of an update step was NaN or infinite; the step was refused."""


class BackendUnavailable(ClaasError, ConnectionError):
    """An inference backend or training service could not be reached."""


class StorageError(ClaasError, OSError):
    """The adapter store or records database is damaged or cannot be written."""


class MissingDependency(ClaasError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


def missing_extra(package: str, extra: str) -> MissingDependency:
    """Build the error raised when an optional extra is not installed.

    Args:
        package: The import name that failed.
        extra: The ``claas`` extra that provides it.

    Returns:
        A :class:`MissingDependency` whose message names the install command.
    """
    return MissingDependency(
        f"{package!r} is not installed; install it with: pip install 'claas[{extra}]'"
    )
