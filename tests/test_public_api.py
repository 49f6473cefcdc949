"""The public surface: exports, the exception tree, a torch-free import."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import claas
from claas import errors


def test_import_does_not_load_torch() -> None:
    code = "import sys, claas; claas.Settings(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_learner_module_does_not_load_torch() -> None:
    code = "import sys; from claas import Learner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exports_match_all() -> None:
    # vars(), not dir(): the module's __dir__ returns __all__ itself.
    code = (
        "import claas; print(sorted(n for n, v in vars(claas).items()"
        " if not n.startswith('_') and getattr(v, '__module__', '').startswith('claas.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    defined = set(eval(out.stdout))
    lazy = set(claas._LAZY)
    aliases = {"Feedback"}  # a union of two record classes: it has no __module__
    assert defined | lazy | aliases | {"__version__"} == set(claas.__all__)
    assert not defined & lazy  # lazily loaded names are not imported eagerly
    for name in claas.__all__:
        assert getattr(claas, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError):
        _ = claas.NoSuchThing  # type: ignore[attr-defined]


ERROR_CLASSES = [
    getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_errors_are_claas_errors_and_pickle(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.ClaasError)
    error = cls("boom")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls and str(clone) == "boom"


@pytest.mark.parametrize(
    ("cls", "stdlib"),
    [
        (errors.InvalidRequest, ValueError),
        (errors.InvalidAdapterId, ValueError),
        (errors.NotFound, LookupError),
        (errors.Conflict, RuntimeError),
        (errors.PermissionDenied, PermissionError),
        (errors.TrainingError, RuntimeError),
        (errors.BackendUnavailable, ConnectionError),
        (errors.StorageError, OSError),
        (errors.MissingDependency, ImportError),
    ],
)
def test_errors_inherit_the_stdlib_error_they_replace(cls: type, stdlib: type) -> None:
    assert issubclass(cls, stdlib)


def test_missing_extra_names_the_pip_command() -> None:
    error = errors.missing_extra("tinker", "tinker")
    assert "pip install 'claas[tinker]'" in str(error)
