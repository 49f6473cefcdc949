"""Fuzz every documented operation with schemathesis, in-process, on the fake learner.

Positive cases (bodies that fit the schema) and negative ones (that break it) go
to every operation of ``/openapi.json``; no response may be a 5xx, every status
must be documented, and JSON responses must match their documented schema.
Examples are bounded and derandomized, so the run takes seconds and CI is stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_support import fake_learner

from claas_server import create_app

EXAMPLES = 20
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Any:
    learner = fake_learner(tmp_path / "data", max_request_bytes=200_000)
    learner.init_adapter("alpha/bot")
    learner.init_adapter("alpha/gone")
    learner.feedback(learner.chat("alpha/bot", USER).id, "Shorter.")
    yield create_app(learner=learner)
    learner.close()


def _cases(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """Fuzzed cases; in positive mode, half of them name an existing adapter.

    Random ids are almost never valid adapter ids, so without this the fuzz
    would rarely get past id validation to the learner.
    """
    fuzzed = operation.as_strategy(generation_mode=mode)
    if mode is not GenerationMode.POSITIVE:
        return fuzzed
    names = {p.name for p in operation.path_parameters}
    if {"namespace", "name"} <= names:
        name = "gone" if operation.method.upper() == "DELETE" else "bot"
        fixed = operation.as_strategy(
            generation_mode=mode, path_parameters={"namespace": "alpha", "name": name}
        )
        return st.one_of(fuzzed, fixed)
    if "model" in names:
        fixed = operation.as_strategy(generation_mode=mode, path_parameters={"model": "alpha/bot"})
        return st.one_of(fuzzed, fixed)

    def existing(case: Any) -> Any:
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "alpha/bot"
        if isinstance(case.body, dict) and "adapter_id" in case.body:
            case.body["adapter_id"] = "alpha/bot"
        return case

    return st.one_of(fuzzed, fuzzed.map(existing))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_fuzz(fuzz_app: Any, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    unbreakable: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_cases(operation, mode))
        def run(case: Any) -> None:
            response = case.call()
            case.validate_response(response, checks=checks)

        try:
            run()
        except Unsatisfiable:
            # Nothing to break: the operation takes no parameters and no body.
            assert mode is GenerationMode.NEGATIVE, operation.label
            unbreakable.append(operation.label)
    assert set(unbreakable) <= {"GET /health", "GET /metrics", "GET /v1/models"}
