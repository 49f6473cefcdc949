"""The Modal app, built and inspected offline; the client/worker wire protocol.

The engine contract (the worker's body run in this process) is in
test_engine_contract.py. The live test deploys the app and needs Modal credentials.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claas import (
    BackendUnavailable,
    DistillConfig,
    InvalidRequest,
    Learner,
    LoraSpec,
    MissingDependency,
    Settings,
)
from claas.config import ModalSettings
from claas.storage import LocalAdapterStore
from claas.teacher import DistillSample
from claas.training import wire
from claas.training.modal import KEY_FILE, ModalTrainer
from claas.types import AdapterVersion, TeacherTopKLists

modal = pytest.importorskip("modal")
pytest.importorskip("claas_modal")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from claas_modal import app as modal_app


def _registered() -> tuple[dict[str, Any], dict[str, Any]]:
    # Modal 1.6 deprecates these build-time views without a replacement yet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(modal_app.app.registered_functions), dict(modal_app.app.registered_classes)


def _spec(function: Any) -> Any:
    # modal has no public accessor for a defined function's resources.
    return function._spec_


def test_app_defines_the_gpu_worker_and_the_web_function() -> None:
    functions, classes = _registered()
    assert modal_app.app.name == "claas"
    assert set(functions) == {"Worker.*", "web"}
    assert set(classes) == {"Worker"}
    assert functions["web"]._is_web_endpoint()


def test_worker_has_a_gpu_the_volume_and_only_named_secrets() -> None:
    _, classes = _registered()
    spec = _spec(classes["Worker"]._get_class_service_function())
    assert spec.gpus == "H100"
    assert list(spec.volumes) == ["/data"]
    assert spec.volumes["/data"].name == "claas-data"
    assert [s.name for s in spec.secrets] == ["claas"]
    assert spec.image is not None


def test_web_function_shares_the_volume_and_runs_in_one_container() -> None:
    functions, _ = _registered()
    spec = _spec(functions["web"])
    assert spec.volumes["/data"].name == modal_app.VOLUME_NAME
    assert [s.name for s in spec.secrets] == ["claas"]
    assert spec.gpus == modal_app.GPU
    assert modal_app.WEB_MAX_CONTAINERS == 1


def test_image_installs_engine_and_server_and_bakes_no_secrets() -> None:
    names = {re.split(r"[=<>\[]", p)[0] for p in modal_app.IMAGE_PACKAGES}
    assert {"torch", "transformers", "peft", "safetensors", "fastapi", "uvicorn"} <= names
    credentials = {"CLAAS_API_KEYS", "CLAAS_VLLM_API_KEY", "HF_TOKEN", "TINKER_API_KEY"}
    assert not credentials & set(modal_app.IMAGE_ENV)
    assert not [v for v in modal_app.IMAGE_ENV.values() if re.search(r"hf_|sk-|tml-", v)]
    assert modal_app.IMAGE_ENV["CLAAS_DATA_DIR"] == "/data"


def test_deploy_time_choices_come_from_the_environment() -> None:
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from claas_modal import app as a\n"
        "w = a.app.registered_classes['Worker']._get_class_service_function()._spec_\n"
        "f = a.app.registered_functions['web']._spec_\n"
        "print(a.app.name, w.gpus, f.gpus, len(w.secrets), w.volumes['/data'].name,"
        " a.IMAGE_ENV['CLAAS_BASE_MODEL'])\n"
    )
    env = {
        **os.environ,
        "CLAAS_MODAL_APP": "claas-test",
        "CLAAS_MODAL_GPU": "A10G",
        "CLAAS_MODAL_WEB_GPU": "none",
        "CLAAS_MODAL_SECRETS": "",
        "CLAAS_MODAL_VOLUME": "other-volume",
        "CLAAS_BASE_MODEL": "Qwen/Qwen3-8B",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [
        "claas-test",
        "A10G",
        "None",
        "0",
        "other-volume",
        "Qwen/Qwen3-8B",
    ]


# ---- the wire format ------------------------------------------------------------------


def test_distill_request_round_trips(tmp_path: Path) -> None:
    sample = DistillSample(
        student_ids=(1, 2, 3, 4),
        teacher_ids=(1, 9, 2, 3, 4),
        student_prompt_len=2,
        teacher_prompt_len=3,
        response_ids=(3, 4),
        old_logprobs=(-0.5, -1.25),
        feedback="shorter",
    )
    parent = AdapterVersion(
        adapter_id="a/b", version=3, parent=2, created=1.5, base_model="m", path="/x",
        lora={"rank": 8}, feedback_ids=("fb-1",), metrics={"loss": 0.5}, engine="modal",
    )  # fmt: skip
    teacher = TeacherTopKLists(
        ids=((3, 5), (4, 6)), logprobs=((-0.1, -2.0),) * 2, token_logprobs=(-0.1, -0.2)
    )
    config = DistillConfig(top_k=2, steps=3)
    request = wire.distill_request([sample], parent=parent, config=config, remote_teacher=[teacher])
    request = json.loads(json.dumps(request))  # plain data only
    samples, got_parent, got_config, remote = wire.unpack_distill_request(
        request, parent_path=tmp_path
    )
    assert samples == [sample] and got_config == config and remote == [teacher]
    assert got_parent == parent.__class__(
        **{**wire.version_to_dict(parent), "path": str(tmp_path), "feedback_ids": ("fb-1",)}
    )


def test_version_files_travel_as_bytes_without_the_manifest(tmp_path: Path) -> None:
    source = tmp_path / "v"
    source.mkdir()
    (source / "adapter_model.safetensors").write_bytes(b"\x00weights")
    (source / "manifest.json").write_text("{}")
    (source / KEY_FILE).write_text("{}")
    files = wire.read_files(source, skip=(KEY_FILE,))
    assert files == {"adapter_model.safetensors": b"\x00weights"}
    wire.write_files(files, tmp_path / "copy")
    assert (tmp_path / "copy" / "adapter_model.safetensors").read_bytes() == b"\x00weights"
    for bad in ("../escape", "a/b", "manifest.json", ""):
        with pytest.raises(InvalidRequest):
            wire.write_files({bad: b""}, tmp_path / "copy")


def test_missing_modal_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "modal", None)
    with pytest.raises(MissingDependency, match=r"claas\[modal\]"):
        _ = ModalTrainer(Settings(data_dir=tmp_path)).worker


def test_an_unreachable_app_is_backend_unavailable(tmp_path: Path) -> None:
    class Missing:
        def remote(self, **_: Any) -> Any:
            raise modal.exception.NotFoundError("app 'claas' not found")

    class Unreachable:
        init_adapter = Missing()

    trainer = ModalTrainer(Settings(data_dir=tmp_path), worker=Unreachable())
    with pytest.raises(BackendUnavailable, match="deployed"):
        trainer.init_adapter(LoraSpec(rank=4), tmp_path / "v0")


# ---- the worker body in this process ----------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Any]:
    from fakes.modal import InProcessWorker

    root = tmp_path_factory.mktemp("modal-worker")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CLAAS_MODEL_CACHE_DIR", str(models_dir))
        monkeypatch.setenv("CLAAS_DATA_DIR", str(root / "data"))
        monkeypatch.setenv("CLAAS_MODAL_WORKER_CACHE", str(root / "cache" / "entries"))
        yield InProcessWorker(modal_app.Worker())


@pytest.mark.slow
def test_a_parent_the_worker_lacks_is_sent_as_files(
    worker: Any, settings: Settings, tmp_path: Path
) -> None:
    from claas.teacher import build_sample_from_text
    from claas.types import ChatMessage

    trainer = ModalTrainer(settings, worker=worker)
    tokenizer = __import__("claas.models", fromlist=["load_tokenizer"]).load_tokenizer(
        settings.base_model, models_dir=settings.models_dir
    )
    sample = build_sample_from_text(
        tokenizer, [ChatMessage("user", "Name a fruit.")], "An apple.", "Say only the noun."
    )
    store = LocalAdapterStore(tmp_path / "adapters")
    lora = LoraSpec(rank=4)
    v0 = store.create("m/a", base_model=settings.base_model, lora=lora,
                      write=lambda out: trainer.init_adapter(lora, out))  # fmt: skip
    key = json.loads((Path(v0.path) / KEY_FILE).read_text())["key"]
    # Another container (or a restart) holds no cached versions.
    worker.instance.body.cache_dir.joinpath(key).rename(tmp_path / "evicted")
    worker.calls.clear()
    trainer.distill([sample], parent=v0, config=DistillConfig(top_k=4), out_dir=tmp_path / "v1")
    sent = [
        (name, sorted(k for k, v in kwargs.items() if v is not None))
        for name, kwargs in worker.calls
    ]
    assert sent == [
        ("distill", ["parent_key", "request"]),
        ("distill", ["parent_files", "request"]),
    ]
    assert set(worker.calls[1][1]["parent_files"]) == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert {"adapter_model.safetensors", KEY_FILE} <= {p.name for p in (tmp_path / "v1").iterdir()}
    with pytest.raises(InvalidRequest, match="cache key"):
        worker.instance.body.distill({}, parent_key="../../etc")


# ---- live: a real deployment ----------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("MODAL_TOKEN_ID"), reason="needs Modal credentials")
def test_live_deploy_and_update(tmp_path: Path) -> None:
    name = f"claas-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CLAAS_MODAL_APP": name,
        "CLAAS_MODAL_GPU": os.environ.get("CLAAS_MODAL_GPU", "T4"),
    }
    env.setdefault("CLAAS_MODAL_SECRETS", "")
    deploy = [sys.executable, "-m", "modal", "deploy", "-m", "claas_modal.app"]
    subprocess.run(deploy, env=env, check=True, timeout=1800)
    try:
        modal_settings = ModalSettings(app=name)
        settings = Settings(data_dir=tmp_path, training_engine="modal", modal=modal_settings)
        with Learner(settings) as learner:
            learner.init_adapter("live/modal", rank=8)
            question = [{"role": "user", "content": "Name a color."}]
            answer = learner.chat("live/modal", question, max_tokens=8, temperature=0)
            result = learner.feedback(answer.id, "Answer with one word.", config={"top_k": 8})
            assert result.version == 1
            assert learner.current_version("live/modal").engine == "modal"
    finally:
        subprocess.run([sys.executable, "-m", "modal", "app", "stop", name], env=env, timeout=300)


def test_settings_select_the_modal_engine(tmp_path: Path) -> None:
    from claas.registry import create_engine

    app_settings = ModalSettings(app="x")
    engine = create_engine(Settings(data_dir=tmp_path, training_engine="modal", modal=app_settings))
    assert isinstance(engine, ModalTrainer) and engine.name == "modal"
