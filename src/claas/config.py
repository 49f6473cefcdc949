"""Settings: where data lives, which model, backend and engine, and the limits.

``Settings()`` gives the embedded default (the bundled SmolLM2 model, local
inference and training, data in ``~/.claas``). ``Settings.load()`` layers, from
lowest to highest precedence: defaults, a TOML file (``CLAAS_CONFIG`` or the
``config_file`` argument), environment variables ``CLAAS_<FIELD>``, and keyword
arguments.
"""

from __future__ import annotations

import json
import os
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from claas.errors import InvalidConfig

__all__ = ["DEFAULT_BASE_MODEL", "Settings"]

DEFAULT_BASE_MODEL = "bundled:smollm2-135m-instruct"
INFERENCE_BACKENDS = ("local", "vllm", "tinker", "fake")
TRAINING_ENGINES = ("local", "tinker", "modal", "fake")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TINKER_LOSSES = ("sdpo", "cross_entropy")


def _default_data_dir() -> Path:
    return Path(os.environ.get("CLAAS_DATA_DIR") or Path.home() / ".claas").expanduser()


def _error(field: str, value: object, rule: str) -> InvalidConfig:
    return InvalidConfig(f"Settings.{field}={value!r} is invalid: {rule}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(attribute.name, value, "must be an integer >= 1")


def _choice(choices: tuple[str, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise _error(attribute.name, value, f"must be one of {choices}")

    return check


def _registered_name(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    # Third-party backends can be registered (claas.registry), so only the form is checked here.
    if not isinstance(value, str) or not value.isidentifier():
        raise _error(
            attribute.name, value, f"must be a registered name such as {INFERENCE_BACKENDS}"
        )


def _check_device(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    valid = value in ("auto", "cpu", "cuda", "mps") or (
        value.startswith("cuda:") and value[5:].isdigit()
    )
    if not valid:
        raise _error("device", value, "must be auto, cpu, mps, cuda or cuda:N")


def _check_api_keys(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _error("api_keys", "<hidden>", "must map each key to a list of namespaces")
    for key, namespaces in value.items():
        if not isinstance(key, str) or len(key) < 8:
            raise _error("api_keys", "<hidden>", "each key must be a string of 8+ characters")
        if not isinstance(namespaces, (list, tuple)) or not all(
            isinstance(n, str) and n for n in namespaces
        ):
            raise _error("api_keys", "<hidden>", "namespaces must be a list of names or '*'")


def _check_template(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    rule = "must be a format string using exactly the fields {content} and {feedback}"
    if not isinstance(value, str):
        raise _error(attribute.name, value, rule)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        value.format(content="", feedback="")
    except (ValueError, KeyError, IndexError) as exc:
        raise _error(attribute.name, value, f"{rule} ({exc})") from exc
    if fields != {"content", "feedback"}:
        raise _error(attribute.name, value, rule)


def _to_path(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser()


@attrs.frozen(kw_only=True)
class Settings:
    """Validated, frozen configuration of a CLaaS installation.

    Attributes:
        data_dir: Root of adapters, records database and model cache.
        base_model: ``bundled:smollm2-135m-instruct``, a local directory or a
            hub id (hub ids download only when named here).
        model_cache_dir: Where converted bundled models are cached (default
            ``<data_dir>/models``); share it between data dirs to convert once.
        inference_backend: ``local``, ``vllm``, ``tinker`` or ``fake``.
        training_engine: ``local``, ``tinker``, ``modal`` or ``fake``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: Weight dtype; ``auto`` is float32 on CPU and bfloat16 on GPU.
        autocast: Compute in bfloat16 with float32 LoRA master weights: the
            frozen linear weights (and the LM head) are held in bfloat16, norms,
            embeddings and every log-softmax stay float32 (faster on CPUs with
            AVX-512 BF16 or AMX and on GPUs).
        thinking: Enable the thinking mode of reasoning models (Qwen3) for
            student and teacher alike.
        teacher_template: How the feedback is shown to the teacher: a format
            string that replaces the last user turn, with the fields
            ``{content}`` (that turn's text) and ``{feedback}``; ``None`` uses
            :data:`claas.teacher.HINDSIGHT_TEMPLATE`.
        keep_versions: Versions retained per adapter (the live one always is).
        adapter_cache_size: Adapter versions kept loaded for inference.
        max_prompt_tokens: Longest accepted prompt.
        max_new_tokens: Upper bound on generated tokens per request.
        max_feedback_chars: Longest accepted feedback text.
        max_batch: Most feedback items accepted in one call.
        vllm_url: Base URL of a running vLLM server (``vllm`` backend).
        vllm_api_key: Bearer key for that server, if it needs one.
        vllm_max_loras: Adapter versions kept loaded in vLLM.
        vllm_timeout: Seconds before a vLLM request fails.
        vllm_sleep_during_training: Put vLLM to sleep (level 1) during local
            training steps when the server reports sleep mode enabled (GPU
            servers started with ``--enable-sleep-mode``); frees its GPU memory
            for training at the cost of a wake-up per update.
        modal_app: Name of the deployed Modal app (``modal`` engine).
        tinker_loss: How the ``tinker`` engine applies the divergence loss:
            ``sdpo`` (the exact SDPO objective on the teacher's top-K, computed
            client-side with ``forward_backward_custom``; two service passes) or
            ``cross_entropy`` (the built-in loss with top-K soft targets, i.e.
            forward KL, alpha 0, one pass).
        api_keys: Server API keys, each mapped to the adapter namespaces it
            may use (``"*"`` for all).
        allow_remote_without_keys: Let the server listen beyond loopback with
            no API keys configured.
        max_request_bytes: Largest HTTP body the server accepts.
    """

    data_dir: Path = attrs.field(factory=_default_data_dir, converter=_to_path)
    base_model: str = attrs.field(default=DEFAULT_BASE_MODEL)
    model_cache_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_path)
    )
    inference_backend: str = attrs.field(default="local", validator=_registered_name)
    training_engine: str = attrs.field(default="local", validator=_registered_name)
    device: str = attrs.field(default="auto", validator=_check_device)
    dtype: str = attrs.field(default="auto", validator=_choice(DTYPES))
    autocast: bool = False
    thinking: bool = False
    teacher_template: str | None = attrs.field(default=None, validator=_check_template)
    keep_versions: int = attrs.field(default=20, validator=_positive_int)
    adapter_cache_size: int = attrs.field(default=4, validator=_positive_int)
    max_prompt_tokens: int = attrs.field(default=4096, validator=_positive_int)
    max_new_tokens: int = attrs.field(default=1024, validator=_positive_int)
    max_feedback_chars: int = attrs.field(default=8000, validator=_positive_int)
    max_batch: int = attrs.field(default=64, validator=_positive_int)
    vllm_url: str | None = None
    vllm_api_key: str | None = attrs.field(default=None, repr=False)
    vllm_max_loras: int = attrs.field(default=4, validator=_positive_int)
    vllm_timeout: float = 120.0
    vllm_sleep_during_training: bool = False
    modal_app: str = "claas"
    tinker_loss: str = attrs.field(default="sdpo", validator=_choice(TINKER_LOSSES))
    api_keys: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, validator=_check_api_keys, repr=False
    )
    allow_remote_without_keys: bool = False
    max_request_bytes: int = attrs.field(default=1_000_000, validator=_positive_int)

    @base_model.validator
    def _check_base_model(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise _error("base_model", value, "must be a non-empty model name")

    @training_engine.validator
    def _check_engine_serves_with_backend(
        self, attribute: attrs.Attribute[str], value: str
    ) -> None:
        # A Tinker version is a record of service-side paths (its weights stay on the
        # service); a local or Modal version is PEFT files. Fakes and third-party
        # names may bridge, so only the built-in pairs are checked.
        engine_on_tinker = value == "tinker"
        backend_on_tinker = self.inference_backend == "tinker"
        other = self.inference_backend if engine_on_tinker else value
        if engine_on_tinker == backend_on_tinker or other not in ("local", "vllm", "modal"):
            return
        field, given = (
            ("training_engine", value)
            if engine_on_tinker
            else ("inference_backend", self.inference_backend)
        )
        raise _error(
            field,
            given,
            "Tinker-trained versions keep their weights on the Tinker service, so "
            "training_engine='tinker' and inference_backend='tinker' go together "
            f"(got inference_backend={self.inference_backend!r}, training_engine={value!r})",
        )

    @property
    def db_path(self) -> Path:
        """The embedded SQLite database."""
        return self.data_dir / "claas.db"

    @property
    def adapters_dir(self) -> Path:
        """Root of the local adapter store."""
        return self.data_dir / "adapters"

    @property
    def models_dir(self) -> Path:
        """Cache of converted base models (``model_cache_dir`` or ``<data_dir>/models``)."""
        return self.model_cache_dir or self.data_dir / "models"

    def evolve(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (validated)."""
        return attrs.evolve(self, **changes)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Build settings from a TOML file, ``CLAAS_*`` variables and keyword arguments.

        Args:
            config_file: A TOML file of settings; defaults to ``$CLAAS_CONFIG``.
            **overrides: Field values that take precedence over everything else.

        Raises:
            InvalidConfig: On an unknown field, an unreadable file or a bad value.
        """
        values: dict[str, Any] = {}
        path = config_file or os.environ.get("CLAAS_CONFIG")
        if path:
            values.update(_read_toml(Path(path)))
        values.update(_read_env(os.environ))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from a mapping of field names, rejecting unknown ones."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidConfig(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        converted = {name: _coerce(name, value) for name, value in values.items()}
        try:
            return cls(**converted)
        except TypeError as exc:
            raise InvalidConfig(str(exc)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfig(f"cannot read config file {path}: {exc}") from exc
    return dict(data.get("claas", data))


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {f.name for f in attrs.fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("CLAAS_") or key == "CLAAS_CONFIG":
            continue
        name = key[len("CLAAS_") :].lower()
        if name in known:
            values[name] = raw
    return values


_FIELD_TYPES = {f.name: f.type for f in attrs.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Turn string values (from the environment or TOML) into the field's type."""
    if not isinstance(value, str):
        if name == "api_keys" and isinstance(value, Mapping):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value
    kind = str(_FIELD_TYPES[name])
    if kind == "bool":
        lowered = value.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise _error(name, value, "must be true or false")
        return lowered in ("1", "true", "yes", "on")
    if kind == "int":
        try:
            return int(value)
        except ValueError as exc:
            raise _error(name, value, "must be an integer") from exc
    if kind == "float":
        try:
            return float(value)
        except ValueError as exc:
            raise _error(name, value, "must be a number") from exc
    if name == "api_keys":
        return _parse_api_keys(value)
    if kind.endswith("| None") and value == "":
        return None
    return value


def _parse_api_keys(value: str) -> dict[str, tuple[str, ...]]:
    """Parse ``CLAAS_API_KEYS``: JSON ``{"key": ["ns", ...]}`` or ``key=ns1|ns2,key2=ns3``."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error("api_keys", "<hidden>", f"invalid JSON: {exc.msg}") from exc
        return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    keys: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, namespaces = item.partition("=")
        if not sep:
            raise _error("api_keys", "<hidden>", "use key=namespace1|namespace2,...")
        keys[key.strip()] = tuple(n.strip() for n in namespaces.split("|") if n.strip())
    return keys
