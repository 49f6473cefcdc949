"""The Tinker engine and backend: loss math, checkpoint records, the fake service's
checks, loss variants, and deletion of service-side checkpoints.

The engine contract itself is in test_engine_contract.py. Live tests talk to the
real service and run only with ``TINKER_API_KEY`` set.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from claas import (
    BackendUnavailable,
    DistillConfig,
    InvalidConfig,
    Learner,
    LoraSpec,
    MissingDependency,
    PayloadTooLarge,
    Settings,
    StorageError,
    TrainingError,
    sdpo,
)
from claas.models import load_tokenizer
from claas.teacher import DistillSample, build_sample_from_text
from claas.types import ChatMessage

tinker = pytest.importorskip("tinker")

from fakes.tinker import FakeTinkerModel, FakeTinkerService, bad_request  # noqa: E402
from tinker import types  # noqa: E402

from claas._tinker import (  # noqa: E402
    CHECKPOINT_FILE,
    TinkerCheckpoint,
    import_tinker,
    service_call,
    teacher_lists,
)
from claas.training import _tinker_loss as losses  # noqa: E402
from claas.training.tinker import TinkerTrainer  # noqa: E402

# ---- the loss math, against claas.sdpo on the full vocabulary --------------------------


def _problem(seed: int, *, b: int = 2, t: int = 4, v: int = 24, k: int = 6) -> dict:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float64) * 2
    teacher_full = torch.log_softmax(torch.randn(b, t, v, generator=gen, dtype=torch.float64), -1)
    ids = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, -1] = False
    return {
        "logits": logits.requires_grad_(True),
        "teacher": sdpo.teacher_topk(teacher_full, k, sampled_ids=ids),
        "ids": ids,
        "mask": mask,
        "old": torch.log_softmax(
            torch.randn(b, t, v, generator=gen, dtype=torch.float64), -1
        ).gather(-1, ids[..., None])[..., 0],
        "base": torch.log_softmax(
            torch.randn(b, t, v, generator=gen, dtype=torch.float64), -1
        ).gather(-1, ids[..., None])[..., 0],
    }


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("add_tail", [True, False])
@pytest.mark.parametrize(("with_old", "kl_beta"), [(False, 0.0), (True, 0.0), (True, 0.2)])
def test_topk_objective_equals_sdpo_loss_on_the_full_vocabulary(
    alpha: float, add_tail: bool, with_old: bool, kl_beta: float
) -> None:
    p = _problem(seed=int(alpha * 10) + add_tail + 2 * with_old)
    config = DistillConfig(alpha=alpha, add_tail=add_tail, is_clip=1.5, kl_beta=kl_beta)
    old = p["old"] if with_old else None
    base = p["base"] if kl_beta > 0 else None
    reference, ref_metrics = sdpo.sdpo_loss(
        p["logits"], p["teacher"], p["ids"], p["mask"], alpha=alpha, add_tail=add_tail,
        old_logprobs=old, is_clip=1.5, base_token_logprobs=base, kl_beta=kl_beta,
    )  # fmt: skip
    (expected,) = torch.autograd.grad(reference, p["logits"])
    s = torch.log_softmax(p["logits"], -1)
    mine, metrics = losses.topk_sdpo_objective(
        s.gather(-1, p["teacher"].ids),
        s.gather(-1, p["ids"][..., None])[..., 0],
        p["teacher"].logprobs,
        p["mask"],
        config=config,
        old_BT=old,
        base_BT=base,
    )
    (got,) = torch.autograd.grad(mine, p["logits"])
    torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(got, expected)
    assert metrics == pytest.approx(ref_metrics)


@pytest.mark.parametrize(("with_old", "kl_beta"), [(False, 0.0), (True, 0.0), (True, 0.3)])
def test_importance_sampling_surrogate_has_the_token_loss_gradient(
    with_old: bool, kl_beta: float
) -> None:
    p = _problem(seed=7 + 3 * with_old)
    old = p["old"] if with_old else None
    base = p["base"] if kl_beta > 0 else None
    config = DistillConfig(loss="token", is_clip=1.5, kl_beta=kl_beta)
    reference, ref_metrics = sdpo.sdpo_loss(
        p["logits"], p["teacher"], p["ids"], p["mask"], loss="token", old_logprobs=old,
        is_clip=1.5, base_token_logprobs=base, kl_beta=kl_beta,
    )  # fmt: skip
    (expected,) = torch.autograd.grad(reference, p["logits"])
    s = torch.log_softmax(p["logits"], -1).gather(-1, p["ids"][..., None])[..., 0]
    adv, metrics = losses.advantages(
        s.detach(), p["teacher"].token_logprobs, p["mask"], config=config, old_BT=old, base_BT=base
    )
    # Tinker's importance_sampling loss with the current logprobs as sampling logprobs.
    surrogate = -(torch.exp(s - s.detach()) * adv).sum()
    (got,) = torch.autograd.grad(surrogate, p["logits"])
    torch.testing.assert_close(got, expected)
    assert metrics["loss"] == pytest.approx(float(reference.detach()))
    assert metrics == pytest.approx(ref_metrics)


def test_variant_selection_is_explicit() -> None:
    assert losses.select_variant(DistillConfig(), "sdpo") == "topk_sdpo"
    assert losses.select_variant(DistillConfig(loss="token"), "sdpo") == "token_importance_sampling"
    assert losses.select_variant(DistillConfig(alpha=0.0), "cross_entropy") == "topk_cross_entropy"
    with pytest.raises(InvalidConfig, match="alpha=0"):
        losses.select_variant(DistillConfig(alpha=0.5), "cross_entropy")
    with pytest.raises(InvalidConfig, match="kl_beta"):
        losses.select_variant(DistillConfig(alpha=0.0, kl_beta=0.1), "cross_entropy")


# ---- records, SDK errors, teacher parsing --------------------------------------------


def test_checkpoint_record_round_trips(tmp_path: Path) -> None:
    record = TinkerCheckpoint.for_modules("Qwen/Qwen3-8B", 16, 7, ["q_proj", "down_proj"])
    assert (record.train_attn, record.train_mlp, record.train_unembed) == (True, True, False)
    assert record.paths == ()
    done = record.evolve(
        state_path="tinker://r/weights/a", sampler_path="tinker://r/sampler_weights/a"
    )
    done.write(tmp_path)
    assert TinkerCheckpoint.read(tmp_path) == done
    assert done.paths == ("tinker://r/weights/a", "tinker://r/sampler_weights/a")


def test_checkpoint_record_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not trained by the Tinker engine"):
        TinkerCheckpoint.read(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StorageError, match="format_version"):
        TinkerCheckpoint.read(tmp_path)


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tinker", None)
    with pytest.raises(MissingDependency, match=r"claas\[tinker\]"):
        import_tinker()


def test_sdk_errors_become_claas_errors() -> None:
    request = tinker.APIConnectionError(request=__import__("httpx").Request("GET", "https://x"))
    with pytest.raises(BackendUnavailable, match="TINKER_API_KEY"), service_call("sampling"):
        raise request
    refused = pytest.raises(TrainingError, match="forward_backward failed")
    with refused, service_call("forward_backward"):
        raise bad_request("loss_fn_inputs are wrong")


def test_teacher_lists_read_response_positions() -> None:
    ids = np.array([[0, 0], [5, 6], [7, 8], [9, 1]], dtype=np.int32)
    lps = np.array([[-99999.0, -99999.0], [-0.1, -2.0], [-0.2, -3.0], [-0.3, -4.0]], np.float32)
    response = types.SampleResponse(
        sequences=[],
        prompt_logprobs_np=np.array([np.nan, -1.0, -2.0, -3.0], dtype=np.float32),
        topk_prompt_logprobs_np=types.topk_logprobs.TopkLogprobs(token_ids=ids, logprobs=lps),
    )
    lists = teacher_lists(response, prompt_len=2, response_ids=[7, 9])
    assert lists.ids == ((7, 8), (9, 1))
    assert lists.token_logprobs == pytest.approx((-2.0, -3.0))
    with pytest.raises(TrainingError, match="unscored"):
        teacher_lists(response, prompt_len=0, response_ids=[5, 7])


# ---- the engine against the fake service ----------------------------------------------


@pytest.fixture
def service(settings: Settings) -> FakeTinkerService:
    return FakeTinkerService(FakeTinkerModel.shared(settings))


@pytest.fixture
def sample(settings: Settings) -> DistillSample:
    tokenizer = load_tokenizer(settings.base_model, models_dir=settings.models_dir)
    return build_sample_from_text(
        tokenizer, [ChatMessage("user", "Name a fruit.")], "An apple.", "Say only the noun."
    )


@pytest.mark.slow
def test_fake_service_refuses_inputs_a_loss_does_not_take(
    service: FakeTinkerService, sample: DistillSample
) -> None:
    client = service.create_lora_training_client(service.base_model, rank=4, seed=1).result()
    model_input = types.ModelInput.from_ints(list(sample.student_ids[:-1]))
    targets = torch.tensor(sample.student_ids[1:])
    no_advantages = types.Datum(
        model_input=model_input,
        loss_fn_inputs={"target_tokens": targets, "logprobs": torch.zeros(len(targets))},
    )
    with pytest.raises(tinker.BadRequestError, match="advantages"):
        client.forward_backward([no_advantages], "importance_sampling").result()
    float_targets = types.Datum(
        model_input=model_input,
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_torch(targets.float()),
            "weights": torch.ones(len(targets)),
        },
    )
    with pytest.raises(tinker.BadRequestError, match="int64"):
        client.forward([float_targets], "cross_entropy").result()
    with pytest.raises(TypeError):
        client.optim_step({"learning_rate": 1e-4})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tinker_loss", "config", "variant"),
    [
        ("sdpo", {"loss": "token", "teacher": "current"}, "token_importance_sampling"),
        ("cross_entropy", {"alpha": 0.0}, "topk_cross_entropy"),
    ],
)
def test_the_variant_used_is_recorded(
    settings: Settings,
    service: FakeTinkerService,
    sample: DistillSample,
    tmp_path: Path,
    tinker_loss: str,
    config: dict,
    variant: str,
) -> None:
    from claas.storage import LocalAdapterStore

    engine = TinkerTrainer(settings.evolve(tinker_loss=tinker_loss), service=service)
    store = LocalAdapterStore(tmp_path / "adapters")
    lora = LoraSpec(rank=4)
    v0 = store.create("t/v", base_model=settings.base_model, lora=lora,
                      write=lambda out: engine.init_adapter(lora, out))  # fmt: skip
    out = tmp_path / "out"
    result = engine.distill(
        [sample], parent=v0, config=DistillConfig(top_k=4, **config), out_dir=out
    )
    record = TinkerCheckpoint.read(out)
    assert record.loss_variant == variant
    assert result.metrics[f"variant_{variant}"] == 1.0
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert record.state_path in service.checkpoints and record.sampler_path in service.checkpoints
    assert service.checkpoints[record.state_path].optimizer is not None  # AdamW moments saved


@pytest.mark.slow
def test_deleted_versions_lose_their_service_checkpoints(
    settings: Settings, service: FakeTinkerService
) -> None:
    # The local inference backend here cannot load a Tinker checkpoint, which the guard
    # would ask it to answer with: this test is about retention, so the guard is off.
    settings = settings.evolve(keep_versions=1, guard_mode="off")
    engine = TinkerTrainer(settings, service=service, rest=service.rest)
    tokenizer = load_tokenizer(settings.base_model, models_dir=settings.models_dir)
    learner = Learner(settings, engine=engine, tokenizer=tokenizer)
    learner.init_adapter("t/del", rank=4)
    item = {
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "response": "An apple.",
        "adapter_id": "t/del",
        "config": {"top_k": 4},
    }
    learner.feedback(text="Say only the noun.", **item)
    first = TinkerCheckpoint.read(Path(learner.current_version("t/del").path))
    learner.feedback(text="Say only the noun.", **item)
    second = TinkerCheckpoint.read(Path(learner.current_version("t/del").path))
    # Retention kept only version 2: version 1's checkpoints are gone from the service.
    assert [v.version for v in learner.versions("t/del")] == [2]
    assert service.deleted == list(first.paths)
    learner.delete_adapter("t/del")
    assert service.deleted == [*first.paths, *second.paths]
    assert not service.checkpoints
    assert not any(p.is_file() for p in (settings.data_dir / "tinker").rglob("*"))
    learner.close()


@pytest.mark.slow
def test_served_logprobs_match_scores(settings: Settings, service: FakeTinkerService) -> None:
    from claas.inference.tinker import TinkerInference
    from claas.types import SamplingParams

    backend = TinkerInference(settings, service=service)
    messages = [ChatMessage("user", "Name a fruit.")]
    generation = backend.generate(
        messages, adapter=None, sampling=SamplingParams(max_tokens=5, temperature=0)
    )
    assert len(generation.response_ids) == len(generation.response_logprobs) > 0
    scored = backend.score(generation.prompt_ids, generation.response_ids, adapter=None)
    assert scored == pytest.approx(list(generation.response_logprobs), abs=1e-4)


class _SentThenWaited:
    """A sampler whose requests run only when waited for, as the hosted service's futures
    finish later than they are sent; it records both, in order."""

    def __init__(self, sampler: object) -> None:
        self.sampler = sampler
        self.events: list[str] = []

    def _later(self, name: str, *args: object, **kwargs: object) -> object:
        self.events.append("sent")
        run = getattr(self.sampler, name)
        events = self.events

        class Later:
            def result(self) -> object:
                events.append("waited")
                return run(*args, **kwargs).result()

        return Later()

    def sample(self, **kwargs: object) -> object:
        return self._later("sample", **kwargs)

    def compute_logprobs(self, sequence: object) -> object:
        return self._later("compute_logprobs", sequence)


@pytest.mark.slow
def test_batched_answers_are_sent_together_and_equal_one_at_a_time(
    settings: Settings, service: FakeTinkerService
) -> None:
    from claas.guard.gate import BatchAnswerer
    from claas.inference.tinker import TinkerInference
    from claas.teacher import encode_chat
    from claas.types import SamplingParams

    backend = TinkerInference(settings, service=service)
    assert isinstance(backend, BatchAnswerer)  # so the guard asks its probes in one batch
    questions = ["Name a fruit.", "What is 2 + 2?", "Name a color."]
    prompts = [encode_chat(backend.tokenizer, [ChatMessage("user", q)]) for q in questions]
    one_by_one = [
        backend.generate(
            [ChatMessage("user", q)],
            adapter=None,
            sampling=SamplingParams(max_tokens=6, temperature=0, seed=0),
        )
        for q in questions
    ]
    recorder = _SentThenWaited(backend._sampler(None))
    backend._sampler = lambda adapter: recorder  # type: ignore[method-assign]
    batch = backend.answer_batch(prompts, adapter=None, max_tokens=6)
    assert recorder.events == ["sent"] * 3 + ["waited"] * 3
    assert [ids for ids, _ in batch] == [list(g.response_ids) for g in one_by_one]
    for (_, logprobs), generation in zip(batch, one_by_one, strict=True):
        assert logprobs == pytest.approx(list(generation.response_logprobs), abs=1e-5)
    recorder.events.clear()
    pairs = [(g.prompt_ids, g.response_ids) for g in one_by_one]
    scores = backend.score_batch(pairs, adapter=None)
    assert recorder.events == ["sent"] * 3 + ["waited"] * 3
    for row, generation in zip(scores, one_by_one, strict=True):
        assert row == pytest.approx(list(generation.response_logprobs), abs=1e-4)
    too_long = [0] * (settings.max_prompt_tokens + 1)
    with pytest.raises(PayloadTooLarge):
        backend.answer_batch([prompts[0], too_long], adapter=None, max_tokens=6)
    assert recorder.events == ["sent"] * 3 + ["waited"] * 3  # the bad batch sent nothing


# ---- live: the real service -----------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("TINKER_API_KEY"), reason="needs TINKER_API_KEY")
def test_live_learning_loop_on_tinker(tmp_path: Path) -> None:
    model = os.environ.get("CLAAS_TINKER_TEST_MODEL", "Qwen/Qwen3-4B-Instruct-2507")
    settings = Settings(
        data_dir=tmp_path,
        base_model=model,
        training_engine="tinker",
        inference_backend="tinker",
        keep_versions=1,
    )
    with Learner(settings) as learner:
        learner.init_adapter("live/tinker", rank=8)
        question = [{"role": "user", "content": "Name a color."}]
        answer = learner.chat("live/tinker", question, max_tokens=16, temperature=0)
        result = learner.feedback(answer.id, "Answer with one word.", config={"top_k": 20})
        assert result.version == 1 and math.isfinite(result.metrics["loss"])
        record = TinkerCheckpoint.read(Path(learner.current_version("live/tinker").path))
        assert record.state_path and record.sampler_path
        assert learner.chat("live/tinker", question, max_tokens=16).adapter_version == 1
        learner.delete_adapter("live/tinker")


def test_settings_select_the_tinker_engine_and_backend(tmp_path: Path) -> None:
    from claas.inference.tinker import TinkerInference
    from claas.registry import create_backend, create_engine

    settings = Settings(
        data_dir=tmp_path, base_model="Qwen/Qwen3-8B", training_engine="tinker",
        inference_backend="tinker",
    )  # fmt: skip
    # Nothing is contacted until the first call.
    assert isinstance(create_engine(settings), TinkerTrainer)
    assert isinstance(create_backend(settings), TinkerInference)
