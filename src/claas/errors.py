"""The CLaaS exception tree.

Every error the library raises on purpose derives from :class:`ClaasError`, and
each subclass also inherits the standard-library exception it stands for, so
``except ValueError`` keeps working for callers who do not know CLaaS::

    ClaasError
    ├── InvalidRequest (ValueError)
    │   ├── InvalidAdapterId
    │   ├── InvalidConfig
    │   ├── PayloadTooLarge
    │   └── ToolsUnsupported
    ├── NotFound (LookupError)
    │   ├── AdapterNotFound
    │   ├── VersionNotFound
    │   ├── CompletionNotFound
    │   └── JobNotFound
    ├── Conflict (RuntimeError)
    │   ├── AdapterExists
    │   └── IdempotencyConflict
    ├── QueueFull (RuntimeError)
    ├── PermissionDenied (PermissionError)
    ├── TrainingError (RuntimeError)
    │   └── NonFiniteUpdate
    ├── UpdateRejected (RuntimeError)
    ├── BackendUnavailable (ConnectionError)
    ├── StorageError (OSError)
    └── MissingDependency (ImportError)

The classes carry no state beyond their message, so they pickle and cross
process boundaries (Modal workers, multiprocessing) unchanged.

Each class has a stable snake_case **code** (``AdapterNotFound`` is
``adapter_not_found``): the one table by which an error crosses a wire and
comes back as the same class. :func:`error_code` names an exception's code;
:func:`error_for_code` rebuilds the exception from a code and a message. HTTP
status codes are the server adapter's business, not this module's.
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
    "IdempotencyConflict",
    "InvalidRequest",
    "JobNotFound",
    "MissingDependency",
    "NonFiniteUpdate",
    "NotFound",
    "PayloadTooLarge",
    "ToolsUnsupported",
    "PermissionDenied",
    "QueueFull",
    "StorageError",
    "TrainingError",
    "UpdateRejected",
    "VersionNotFound",
    "error_code",
    "error_for_code",
    "missing_extra",
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


class ToolsUnsupported(InvalidRequest):
    """The request offers tools, and the serving backend or its chat template cannot take them."""


class NotFound(ClaasError, LookupError):
    """A named thing does not exist."""


class AdapterNotFound(NotFound):
    """No adapter with this id exists."""


class VersionNotFound(NotFound):
    """The adapter exists, but not this version of it (never written, or retired)."""


class CompletionNotFound(NotFound):
    """No served completion with this id is recorded."""


class JobNotFound(NotFound):
    """No feedback job with this id exists (or the caller may not see it)."""


class Conflict(ClaasError, RuntimeError):
    """The request clashes with the current state."""


class AdapterExists(Conflict):
    """An adapter with this id already exists."""


class IdempotencyConflict(Conflict):
    """An idempotency key was reused with a different request body."""


class QueueFull(ClaasError, RuntimeError):
    """Too many feedback jobs are waiting (per adapter or in all); retry later.

    Nothing was recorded for the refused submission.
    """


class PermissionDenied(ClaasError, PermissionError):
    """The caller may not see or change this resource."""


class TrainingError(ClaasError, RuntimeError):
    """An update could not be computed; no version was published."""


class NonFiniteUpdate(TrainingError):
    """The loss or gradient of an update step was NaN or infinite; the step was refused."""


class UpdateRejected(ClaasError, RuntimeError):
    """The guard kept an update's version from going live (the message gives its reasons).

    The version is kept as *rejected* (listed, exportable, never served); the
    live version did not change.
    """


class BackendUnavailable(ClaasError, ConnectionError):
    """An inference backend, training service or the records database could not be reached."""


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


_CLASSES: tuple[type[ClaasError], ...] = (
    ClaasError,
    InvalidRequest,
    InvalidAdapterId,
    InvalidConfig,
    PayloadTooLarge,
    ToolsUnsupported,
    NotFound,
    AdapterNotFound,
    VersionNotFound,
    CompletionNotFound,
    JobNotFound,
    Conflict,
    AdapterExists,
    IdempotencyConflict,
    QueueFull,
    PermissionDenied,
    TrainingError,
    NonFiniteUpdate,
    UpdateRejected,
    BackendUnavailable,
    StorageError,
    MissingDependency,
)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


_BY_CODE: dict[str, type[ClaasError]] = {_snake(cls.__name__): cls for cls in _CLASSES}
_CODE_OF: dict[type, str] = {cls: code for code, cls in _BY_CODE.items()}


def error_code(exc: BaseException) -> str:
    """The stable code of an exception: its nearest CLaaS class, in snake case.

    A subclass defined outside this module has its parent's code, so a client
    decodes it to a class it knows. An exception that is not a ``ClaasError``
    has the code of its own class name (e.g. ``key_error``).

    Args:
        exc: Any exception.

    Returns:
        A snake_case code such as ``adapter_not_found``.
    """
    for cls in type(exc).__mro__:
        if cls in _CODE_OF:
            return _CODE_OF[cls]
    return _snake(type(exc).__name__)


def error_for_code(
    code: str | None, message: str, *, default: type[ClaasError] = ClaasError
) -> ClaasError:
    """Rebuild the exception a code stands for.

    Args:
        code: A code from :func:`error_code` (``None`` or unknown: ``default``).
        message: The exception's message.
        default: The class of an unknown code (the nearest base the caller knows).

    Returns:
        An instance of the code's class carrying ``message``.
    """
    return _BY_CODE.get(code or "", default)(message)
