"""Run the real Modal app's ``Worker`` in this process, for tests without a Modal token.

``modal`` runs a class method's body locally with ``.local(...)``, after the
class's ``@modal.enter`` hook (no Volume is mounted then). This wrapper gives
the worker instance the ``method.remote(...)`` shape ``ModalTrainer`` calls,
and records every call so tests can see what crossed the wire.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any


class _Method:
    def __init__(self, owner: InProcessWorker, name: str) -> None:
        self._owner = owner
        self._name = name

    def remote(self, **kwargs: Any) -> Any:
        # What Modal would send: the arguments must survive pickling.
        sent = pickle.loads(pickle.dumps(kwargs))
        self._owner.calls.append((self._name, sent))
        with warnings.catch_warnings():
            # "executing locally and will not have access to the mounted Volume"
            warnings.simplefilter("ignore", UserWarning)
            result = getattr(self._owner.instance, self._name).local(**sent)
        return pickle.loads(pickle.dumps(result))


class InProcessWorker:
    """Wraps an instance of ``claas_modal.app.Worker`` so ``.remote`` runs ``.local``."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)
