"""Local inference's adapter cache: reused slots serve exactly the version asked for.

Every check compares against a second ``LocalInference`` with a large cache, which
loads each version into a freshly injected PEFT adapter (the path without reuse).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from claas import LoraSpec, Settings, StorageError
from claas.inference.local import LocalInference
from claas.models import load_tokenizer
from claas.storage import LocalAdapterStore
from claas.teacher import encode_chat
from claas.training.local import LocalTrainer
from claas.types import AdapterVersion, ChatMessage

pytestmark = pytest.mark.slow

WEIGHTS = "adapter_model.safetensors"
RANK8 = LoraSpec(rank=8, alpha=16.0)


@attrs.define
class World:
    settings: Settings
    store: LocalAdapterStore
    engine: LocalTrainer
    prompt: list[int]
    response: list[int]
    seeds: Iterator[int]

    def version(self, adapter_id: str, lora: LoraSpec = RANK8) -> AdapterVersion:
        """A new version of ``adapter_id`` with random, clearly non-zero LoRA weights."""
        seed = next(self.seeds)

        def write(out: Path) -> None:
            self.engine.init_adapter(lora, out)
            weights = load_file(str(out / WEIGHTS))
            g = torch.Generator().manual_seed(seed)
            save_file(
                {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in weights.items()},
                str(out / WEIGHTS),
            )

        if not self.store.exists(adapter_id):
            return self.store.create(
                adapter_id, base_model=self.settings.base_model, lora=lora, write=write
            )
        parent = self.store.latest_version(adapter_id)
        return self.store.publish(adapter_id, parent=parent, write=write)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> World:
    settings = Settings(data_dir=tmp_path_factory.mktemp("slots"), model_cache_dir=models_dir)
    tokenizer = load_tokenizer(settings.base_model, models_dir=models_dir)
    prompt = encode_chat(tokenizer, [ChatMessage("user", "Name a color.")])
    response = tokenizer.encode("Blue is a calm color.", add_special_tokens=False)
    return World(
        settings,
        LocalAdapterStore(settings.adapters_dir, keep_versions=100),
        LocalTrainer(settings),
        prompt,
        response,
        iter(range(1000)),
    )


@pytest.fixture(scope="module")
def reference(world: World) -> Iterator[LocalInference]:
    fresh = LocalInference(attrs.evolve(world.settings, adapter_cache_size=64))
    yield fresh
    fresh.close()


def _cache(world: World, size: int) -> LocalInference:
    return LocalInference(attrs.evolve(world.settings, adapter_cache_size=size))


def _assert_serves(
    world: World, inference: LocalInference, reference: LocalInference, v: AdapterVersion
) -> None:
    got = inference.score(world.prompt, world.response, adapter=v)
    want = reference.score(world.prompt, world.response, adapter=v)
    assert got == pytest.approx(want, abs=1e-5), v.ref


def _peft_adapters(inference: LocalInference) -> int:
    return len(inference._slots.model.peft_config)


def test_a_published_version_reuses_its_predecessors_slot(
    world: World, reference: LocalInference
) -> None:
    inference = _cache(world, 4)
    v0 = world.version("t/publish")
    _assert_serves(world, inference, reference, v0)
    for _ in range(3):
        new = world.version("t/publish")
        inference.publish(new)
        assert _peft_adapters(inference) == 1  # copied in, no new LoRA layers
        assert [v.ref for v in inference._slots.resident()] == [new.ref]
        _assert_serves(world, inference, reference, new)
    # An old version asked for again is loaded again, exactly.
    _assert_serves(world, inference, reference, v0)
    _assert_serves(world, inference, reference, new)
    inference.close()


def test_a_candidate_takes_an_earlier_versions_slot_never_its_parents(
    world: World, reference: LocalInference
) -> None:
    """The guard asks each candidate while its parent stays live: two slots, reused."""
    inference = _cache(world, 4)
    live = world.version("t/candidates")
    inference.publish(live)
    for _ in range(3):
        candidate = world.version("t/candidates")  # published in the store, not to inference
        _assert_serves(world, inference, reference, candidate)
        assert _peft_adapters(inference) <= 2  # after the first, copied into a slot
        assert live.ref in {v.ref for v in inference._slots.resident()}
        _assert_serves(world, inference, reference, live)  # the parent still served as is
        inference.publish(candidate)  # it passed: it goes live
        live = candidate
    assert _peft_adapters(inference) == 2
    inference.close()


def test_a_full_cache_reuses_the_least_recently_used_slot(
    world: World, reference: LocalInference
) -> None:
    inference = _cache(world, 2)
    versions = [world.version(f"t/full{i}") for i in range(4)]
    for v in versions:
        _assert_serves(world, inference, reference, v)
        assert _peft_adapters(inference) <= 2
    assert [v.ref for v in inference._slots.resident()] == [v.ref for v in versions[2:]]
    for v in reversed(versions):  # every one still right after all the swapping
        _assert_serves(world, inference, reference, v)
    inference.close()


def test_another_lora_shape_gets_its_own_slot(world: World, reference: LocalInference) -> None:
    inference = _cache(world, 2)
    small = world.version("t/shape-small", LoraSpec(rank=4, alpha=8.0))
    large = world.version("t/shape-large", LoraSpec(rank=16, alpha=32.0))
    _assert_serves(world, inference, reference, small)
    _assert_serves(world, inference, reference, large)
    assert _peft_adapters(inference) == 2
    third = world.version("t/shape-third", LoraSpec(rank=2, alpha=4.0))
    _assert_serves(world, inference, reference, third)  # no slot fits: evict and inject
    assert _peft_adapters(inference) == 2
    _assert_serves(world, inference, reference, small)
    inference.close()


def test_switching_between_slots_of_other_target_modules_serves_each_exactly(
    world: World, reference: LocalInference
) -> None:
    """Slots wrapping different modules: the active adapter is switched on every layer."""
    inference = _cache(world, 3)
    attention = world.version(
        "t/targets-attn", LoraSpec(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj"))
    )
    everything = world.version("t/targets-all")
    mlp = world.version(
        "t/targets-mlp", LoraSpec(rank=8, alpha=16.0, target_modules=("down_proj",))
    )
    for v in (attention, everything, mlp, attention, mlp, everything):
        _assert_serves(world, inference, reference, v)
    layers = inference._slots._layers
    assert layers is not None
    assert {tuple(layer.active_adapters) for layer in layers} == {
        (inference._slots.load(everything),)
    }
    assert not any(p.requires_grad for p in inference._slots.model.parameters())
    inference.close()


def test_a_retired_adapters_slot_is_reused_and_its_versions_are_gone(
    world: World, reference: LocalInference
) -> None:
    inference = _cache(world, 4)
    gone, kept = world.version("t/retired"), world.version("t/kept")
    _assert_serves(world, inference, reference, gone)
    _assert_serves(world, inference, reference, kept)
    inference.retire("t/retired")
    assert [v.ref for v in inference._slots.resident()] == [kept.ref]
    newcomer = world.version("t/newcomer")
    _assert_serves(world, inference, reference, newcomer)
    assert _peft_adapters(inference) == 2
    _assert_serves(world, inference, reference, kept)
    inference.close()


def test_an_unreadable_version_changes_nothing(
    world: World, reference: LocalInference, tmp_path: Path
) -> None:
    inference = _cache(world, 1)
    served = world.version("t/broken")
    _assert_serves(world, inference, reference, served)
    broken = world.version("t/broken")
    weights = Path(broken.path) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn file
    with pytest.raises(SafetensorError):
        inference.publish(broken)
    assert [v.ref for v in inference._slots.resident()] == [served.ref]
    _assert_serves(world, inference, reference, served)


def test_a_version_without_peft_files_is_a_storage_error(
    world: World, reference: LocalInference
) -> None:
    inference = _cache(world, 2)
    served = world.version("t/not-peft")
    _assert_serves(world, inference, reference, served)
    other = world.version("t/not-peft")
    (Path(other.path) / "adapter_config.json").unlink()
    with pytest.raises(StorageError, match=r"adapter_config\.json"):
        inference.publish(other)
    assert [v.ref for v in inference._slots.resident()] == [served.ref]
    _assert_serves(world, inference, reference, served)
