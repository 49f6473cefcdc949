"""Content kept: a short answer must still name its key fact."""

from __future__ import annotations

import pytest

from claas.errors import InvalidConfig
from claas.eval import EvalConfig, compose
from claas.eval.verifiers import KeepsFact


def test_a_fact_matches_the_start_of_a_word_in_any_case() -> None:
    keeps = KeepsFact(any_of=("scatter", "Rayleigh"))
    assert keeps("Air molecules scatter blue light.")
    assert keeps("It is due to SCATTERING.")
    assert keeps("Rayleigh's law.")
    assert not keeps("The answer to this question lies in the context of astronomy.")
    assert not keeps("It is unscattered.")  # a word start, not any substring


def test_an_empty_fact_list_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"KeepsFact\.any_of"):
        KeepsFact(any_of=())


def test_the_concise_preference_names_a_fact_for_every_held_out_probe() -> None:
    (concise,) = EvalConfig.from_mapping(compose([])).preferences
    assert set(concise.facts) == set(concise.probes)
    assert KeepsFact(any_of=concise.facts["Why is the sky blue?"])(
        "Air molecules scatter blue sunlight more than red."
    )
