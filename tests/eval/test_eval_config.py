"""Composing the packaged Hydra config into a validated EvalConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from claas.errors import InvalidAdapterId, InvalidConfig
from claas.eval import EvalConfig, compose
from claas.eval.verifiers import MaxLength, Mentions, NoEmoji
from claas.types import DistillConfig


def build(*overrides: str) -> EvalConfig:
    return EvalConfig.from_mapping(compose(list(overrides)))


@pytest.mark.parametrize(
    ("name", "verifier_type"),
    [("concise", MaxLength), ("no_emoji", NoEmoji), ("identity", Mentions)],
)
def test_each_packaged_preference_composes(name: str, verifier_type: type) -> None:
    config = build(f"preference={name}")
    (preference,) = config.preferences
    assert preference.name == name
    assert isinstance(preference.verifier, verifier_type)
    assert preference.prompts and preference.probes and preference.pairs
    assert preference.feedback.strip()
    assert config.adapter_id(name) == f"eval/{name}-seed0-{name}"


def test_identity_verifier_looks_for_kuro() -> None:
    (preference,) = build("preference=identity").preferences
    assert preference.verifier("Hi, I'm Kuro!")
    assert not preference.verifier("I am an AI assistant.")


def test_defaults_select_concise_with_the_base_settings() -> None:
    config = build()
    assert [p.name for p in config.preferences] == ["concise"]
    assert config.steps == 16 and config.batch_size == 1 and config.seed == 0
    assert config.engine == "local"
    # The eval runs what the library runs by default.
    assert config.distill.learning_rate == pytest.approx(DistillConfig().learning_rate)
    assert config.measure.temperature == 0.0
    assert config.anchors and set(config.metrics) == {"margin", "capability", "collapse"}


def test_several_preferences_and_overrides() -> None:
    config = build(
        "preference=[concise,no_emoji,identity]",
        "steps=4",
        "batch_size=2",
        "steps_per_batch=3",
        "distill.learning_rate=1e-4",
        "seed=7",
    )
    assert [p.name for p in config.preferences] == ["concise", "no_emoji", "identity"]
    assert (config.steps, config.batch_size, config.seed) == (4, 2, 7)
    assert config.distill.steps == 3
    assert config.distill.learning_rate == pytest.approx(1e-4)
    assert config.name == "concise-no_emoji-identity-seed7"


def test_user_defined_preference_from_a_search_path(tmp_path: Path) -> None:
    folder = tmp_path / "conf" / "preference"
    folder.mkdir(parents=True)
    (folder / "polite.yaml").write_text(
        "polite:\n"
        "  feedback: Say please.\n"
        "  verifier: {_target_: claas.eval.verifiers.Regex, pattern: please, ignore_case: true}\n"
        "  prompts: [Pass the salt.]\n"
        "  probes: [Open the door.]\n"
    )
    config = build(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "preference=polite")
    (preference,) = config.preferences
    assert preference.verifier("Please open it") and not preference.verifier("Open it")
    assert preference.pairs == ()


def test_a_preference_can_be_added_inline() -> None:
    config = build(
        "+preference.shout={feedback: Use capitals.,"
        " verifier: {_target_: claas.eval.verifiers.Regex, pattern: '^[A-Z ]+$'},"
        " prompts: [Hi], probes: [Hello]}"
    )
    assert [p.name for p in config.preferences] == ["concise", "shout"]


@pytest.mark.parametrize(
    "override",
    ["step=3", "preference=nonexistent", "steps=[oops", "distill.nonsense=1"],
)
def test_bad_overrides_are_invalid_config(override: str) -> None:
    with pytest.raises(InvalidConfig):
        build(override)


def test_an_unresolvable_interpolation_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="interpolation"):
        build("anchors=[${anchors.0}]")


def test_distill_steps_must_come_from_steps_per_batch() -> None:
    with pytest.raises(InvalidConfig, match="steps_per_batch"):
        build("+distill.steps=2")


def test_a_bad_distill_value_names_the_field() -> None:
    with pytest.raises(InvalidConfig, match="alpha"):
        build("distill.alpha=2.0")


def test_an_unknown_verifier_target_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="verifier"):
        build("preference.concise.verifier._target_=claas.eval.verifiers.Nope")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["engine=remote"], "server.url"),
        (["engine=gpu"], "engine"),
        (["steps=-1"], "steps"),
        (["batch_size=0"], "batch_size"),
        (["run_name=has space"], "run_name"),
        (["metrics=[margin,vibes]"], "metrics"),
        (["anchors=[]"], "anchor"),
        (["+alerts.sometimes=1"], "alerts"),
    ],
)
def test_invalid_values_are_rejected(overrides: list[str], match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        build(*overrides)


def test_adapter_ids_must_be_valid() -> None:
    with pytest.raises(InvalidAdapterId):
        build(
            "run_name=" + "r" * 40,
            "+preference.x" + "y" * 30 + "={feedback: f,"
            " verifier: {_target_: claas.eval.verifiers.NoEmoji}, prompts: [a], probes: [b]}",
        )


def test_output_dir_defaults_under_the_data_dir(tmp_path: Path) -> None:
    config = build(f"data_dir={tmp_path}", "run_name=mine")
    assert config.resolved_output_dir() == tmp_path / "eval" / "mine"
    assert build(f"output_dir={tmp_path / 'x'}").resolved_output_dir() == tmp_path / "x"


def test_fingerprint_ignores_steps_but_not_the_seed() -> None:
    assert build("steps=2").fingerprint() == build("steps=9").fingerprint()
    assert build("seed=1").fingerprint() != build("seed=2").fingerprint()


def test_broken_yaml_in_a_user_preference_is_an_invalid_config(tmp_path: Path) -> None:
    from claas import InvalidConfig
    from claas.eval.config import compose

    (tmp_path / "preference").mkdir()
    (tmp_path / "preference" / "broken.yaml").write_text("feedback: [it's, not: closed\n")
    with pytest.raises(InvalidConfig, match="eval config"):
        compose([f"hydra.searchpath=[file://{tmp_path}]", "preference=broken"])
