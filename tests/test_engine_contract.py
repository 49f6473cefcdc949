"""The contract every training engine meets, run against each of them.

- ``local``: the bundled model on this CPU;
- ``tinker``: the Tinker engine against the in-process fake service (real SDK
  types, real embedded model);
- ``modal``: the Modal client calling the real app's ``Worker`` in this process.

Each engine is exercised through the adapter store, the way the Learner uses it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from claas import DistillConfig, Learner, LoraSpec, NonFiniteUpdate, Settings
from claas.models import load_tokenizer
from claas.records import Records
from claas.storage import LocalAdapterStore
from claas.teacher import DistillSample, build_sample_from_text
from claas.training import TrainingEngine
from claas.types import AdapterVersion, ChatMessage, DistillResult

pytestmark = pytest.mark.slow

LORA = LoraSpec(rank=8, alpha=16.0)
CONFIG = DistillConfig(top_k=8, learning_rate=1e-3)


@attrs.define
class Kit:
    """One engine with what the contract needs to look at its results."""

    settings: Settings
    engine: Any
    inference: Any
    weights: Callable[[AdapterVersion], dict[str, torch.Tensor]]
    service: Any = None


def _peft_weights(version: AdapterVersion) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(version.path) / "adapter_model.safetensors"))


def _local_kit(settings: Settings) -> Kit:
    from claas.inference.local import LocalInference
    from claas.training.local import LocalTrainer

    return Kit(settings, LocalTrainer(settings), LocalInference(settings), _peft_weights)


def _tinker_kit(settings: Settings) -> Kit:
    from fakes.tinker import FakeTinkerModel, FakeTinkerService

    from claas._tinker import TinkerCheckpoint
    from claas.inference.tinker import TinkerInference
    from claas.training.tinker import TinkerTrainer

    service = FakeTinkerService(FakeTinkerModel.shared(settings))

    def weights(version: AdapterVersion) -> dict[str, torch.Tensor]:
        state = TinkerCheckpoint.read(Path(version.path)).state_path
        assert state is not None, "version 0 has no service-side weights"
        return service.checkpoints[state].weights

    engine = TinkerTrainer(settings, service=service, rest=service.rest)
    inference = TinkerInference(settings, service=service)
    return Kit(settings, engine, inference, weights, service)


def _modal_kit(settings: Settings, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Kit:
    from fakes.modal import InProcessWorker

    from claas.inference.local import LocalInference
    from claas.training.modal import ModalTrainer

    # The worker reads its settings from the environment, as in a container.
    monkeypatch.setenv("CLAAS_MODEL_CACHE_DIR", str(settings.models_dir))
    monkeypatch.setenv("CLAAS_DATA_DIR", str(settings.data_dir / "worker"))
    monkeypatch.setenv("CLAAS_MODAL_WORKER_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from claas_modal.app import Worker

        worker = InProcessWorker(Worker())
    engine = ModalTrainer(settings, worker=worker)
    return Kit(settings, engine, LocalInference(settings), _peft_weights)


@pytest.fixture(scope="module", params=["local", "tinker", "modal"])
def kit(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[Kit]:
    name = request.param
    if name == "tinker":
        pytest.importorskip("tinker")
    if name == "modal":
        pytest.importorskip("modal")
        pytest.importorskip("claas_modal")
    root = tmp_path_factory.mktemp(f"contract-{name}")
    settings = Settings(data_dir=root / "data", model_cache_dir=models_dir)
    with pytest.MonkeyPatch.context() as monkeypatch:
        if name == "local":
            built = _local_kit(settings)
        elif name == "tinker":
            built = _tinker_kit(settings)
        else:
            built = _modal_kit(settings, monkeypatch, root / "worker-cache" / "cache")
        yield built
        built.engine.close()
        built.inference.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "adapters", keep_versions=100)


@pytest.fixture(scope="module")
def samples(models_dir: Path) -> list[DistillSample]:
    tokenizer = load_tokenizer(Settings().base_model, models_dir=models_dir)
    question = [ChatMessage(role="user", content="Name a color.")]
    return [
        build_sample_from_text(
            tokenizer, question, "Blue is a calm color.", "Answer with one word."
        )
    ]


def _create(kit: Kit, store: LocalAdapterStore, adapter_id: str = "t/a") -> AdapterVersion:
    return store.create(
        adapter_id,
        base_model=kit.settings.base_model,
        lora=LORA,
        write=lambda out: kit.engine.init_adapter(LORA, out),
        engine=kit.engine.name,
    )


def _distill(
    kit: Kit,
    store: LocalAdapterStore,
    parent: AdapterVersion,
    samples: list[DistillSample],
    config: DistillConfig = CONFIG,
) -> tuple[AdapterVersion, DistillResult]:
    results: list[DistillResult] = []

    def write(out: Path) -> None:
        results.append(kit.engine.distill(samples, parent=parent, config=config, out_dir=out))

    version = store.publish(parent.adapter_id, parent=parent.version, write=write)
    return version, results[0]


def _score(kit: Kit, sample: DistillSample, version: AdapterVersion | None) -> list[float]:
    prompt = sample.student_ids[: sample.student_prompt_len]
    return kit.inference.score(prompt, sample.response_ids, adapter=version)


def test_init_adapter_writes_a_version_equal_to_the_base_model(
    kit: Kit, store: LocalAdapterStore, samples: list[DistillSample]
) -> None:
    assert isinstance(kit.engine, TrainingEngine)
    v0 = _create(kit, store)
    assert any(Path(v0.path).iterdir())
    # Loadable: the serving backend reads the files, and LoRA starts at B = 0.
    base, initial = _score(kit, samples[0], None), _score(kit, samples[0], v0)
    assert initial == pytest.approx(base, abs=1e-4)


def test_distill_writes_a_new_version_with_finite_metrics(
    kit: Kit, store: LocalAdapterStore, samples: list[DistillSample]
) -> None:
    v0 = _create(kit, store)
    v1, result = _distill(kit, store, v0, samples)
    assert v1.version == 1 and v1.parent == 0
    assert result.steps == 1 and result.tokens == samples[0].response_len
    assert {"loss", "distill_loss", "tokens"} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert _score(kit, samples[0], v1) != pytest.approx(_score(kit, samples[0], v0), abs=1e-6)


def test_non_finite_update_is_refused_and_writes_nothing(
    kit: Kit, store: LocalAdapterStore, samples: list[DistillSample], tmp_path: Path
) -> None:
    v0 = _create(kit, store)
    saved = None if kit.service is None else set(kit.service.checkpoints)
    exploding = CONFIG.merged({"learning_rate": 1e30, "steps": 2})
    out = tmp_path / "out"
    with pytest.raises(NonFiniteUpdate):
        kit.engine.distill(samples, parent=v0, config=exploding, out_dir=out)
    assert not out.exists() or not any(out.iterdir())
    if saved is not None:
        assert set(kit.service.checkpoints) == saved
    # The engine is still usable: the refused step left no trace behind.
    _, result = _distill(kit, store, v0, samples)
    assert math.isfinite(result.metrics["loss"])


def test_a_second_update_continues_from_the_first_state(
    kit: Kit, store: LocalAdapterStore, samples: list[DistillSample]
) -> None:
    v0 = _create(kit, store)
    v1, _ = _distill(kit, store, v0, samples)
    kit.engine.on_published(v1)
    warm, _ = _distill(kit, store, v1, samples)  # state still in the engine where it can be
    cold, _ = _distill(kit, store, v1, samples)  # state restored from what v1 saved
    before, after, again = kit.weights(v1), kit.weights(warm), kit.weights(cold)
    assert set(after) == set(before) == set(again)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Same weights both ways: the optimizer moments were saved with v1 and restored.
    for key in after:
        torch.testing.assert_close(again[key], after[key], rtol=1e-5, atol=1e-6)


def test_learner_end_to_end(kit: Kit, tmp_path: Path) -> None:
    settings = kit.settings.evolve(data_dir=tmp_path / "learner")
    records = Records(settings.db_path)
    learner = Learner(settings, engine=kit.engine, inference=kit.inference, records=records)
    try:
        learner.init_adapter("t/e2e", rank=8, alpha=16.0)
        question = [{"role": "user", "content": "Name a color."}]
        first = learner.chat("t/e2e", question, max_tokens=6, temperature=0)
        result = learner.feedback(first.id, "Answer with one word.", config={"top_k": 8})
        assert result.version == 1 and result.parent_version == 0
        versions = learner.versions("t/e2e")
        assert [v.version for v in versions] == [0, 1]
        assert {v.engine for v in versions} == {kit.engine.name}
        assert learner.chat("t/e2e", question, max_tokens=6, temperature=0).adapter_version == 1
    finally:
        # Not learner.close(): the engine and backend belong to the module's kit. Its job
        # worker is stopped first, or it polls the closed records until collected.
        learner._jobs.stop()
        records.close()
