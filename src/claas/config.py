"""Settings: where data lives, which model, backend and engine, and the limits.

``Settings()`` gives the embedded default (the bundled SmolLM2 model, local
inference and training, data in ``~/.claas``). ``Settings.load()`` layers, from
lowest to highest precedence: defaults, a TOML file (``CLAAS_CONFIG`` or the
``config_file`` argument), environment variables ``CLAAS_<FIELD>``, and keyword
arguments.

Fields that only one backend or the server reads live in a nested record:
``settings.vllm`` (:class:`VllmSettings`), ``settings.tinker``
(:class:`TinkerSettings`), ``settings.modal`` (:class:`ModalSettings`) and
``settings.server`` (:class:`ServerSettings`). Each nested field also has a flat
name, ``<section>_<field>`` (``vllm_url``, ``tinker_loss``, ``modal_app``) or
the bare field for the server (``api_keys``, ``max_request_bytes``): the
environment variable is ``CLAAS_<FLAT NAME>``, and the TOML file, ``load``,
``from_mapping`` and ``evolve`` accept either spelling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import attrs

from claas import _config_sources as sources
from claas._config_followups import FOLLOWUP_SKIP_BELOW, FollowupSettings
from claas._guard_settings import GuardSettings
from claas.errors import InvalidConfig

__all__ = [
    "DEFAULT_BASE_MODEL",
    "FOLLOWUP_SKIP_BELOW",
    "FollowupSettings",
    "GuardSettings",
    "JobSettings",
    "ModalSettings",
    "ServerSettings",
    "Settings",
    "TinkerSettings",
    "VllmSettings",
]

DEFAULT_BASE_MODEL = "bundled:smollm2-135m-instruct"
BuiltinBackend = Literal["local", "vllm", "tinker", "fake"]
BuiltinEngine = Literal["local", "tinker", "modal", "fake"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DeviceKind = Literal["auto", "cpu", "cuda", "mps"]
TinkerLoss = Literal["sdpo", "cross_entropy"]
INFERENCE_BACKENDS: tuple[str, ...] = get_args(BuiltinBackend)
TRAINING_ENGINES: tuple[str, ...] = get_args(BuiltinEngine)
DTYPES: tuple[str, ...] = get_args(Dtype)
DEVICE_KINDS: tuple[str, ...] = get_args(DeviceKind)
TINKER_LOSSES: tuple[str, ...] = get_args(TinkerLoss)


def _default_data_dir() -> Path:
    return Path(os.environ.get("CLAAS_DATA_DIR") or Path.home() / ".claas").expanduser()


_error = sources.error


def _name(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """The field's dotted name: ``vllm.max_loras`` in a section, ``keep_versions`` at the top."""
    section = getattr(instance, "section", "")
    return f"{section}.{attribute.name}" if section else attribute.name


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(_name(instance, attribute), value, "must be an integer >= 1")


def _positive_number(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise _error(_name(instance, attribute), value, "must be a positive number of seconds")


def _choice(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise _error(_name(instance, attribute), value, f"must be one of {choices}")

    return check


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _error(_name(instance, attribute), value, "must be a non-empty string")


def _check_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _error(_name(instance, attribute), value, "must be an http:// or https:// URL")


def _check_database_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise _error(_name(instance, attribute), "<redacted>", "must be a postgresql:// URL")


def _registered_name(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    # Third-party backends can be registered (claas.registry), so only the form is checked here.
    if not isinstance(value, str) or not value.isidentifier():
        raise _error(
            attribute.name, value, f"must be a registered name such as {INFERENCE_BACKENDS}"
        )


def _check_device(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    valid = value in DEVICE_KINDS or (value.startswith("cuda:") and value[5:].isdigit())
    if not valid:
        raise _error("device", value, f"must be one of {DEVICE_KINDS} or cuda:N")


def _autocast_setting(value: Any) -> bool | Literal["auto"]:
    """``auto``, or a bool (text reads as every bool setting's does)."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "auto":
        return "auto"
    if text in sources.BOOL_TEXT:
        return sources.BOOL_TEXT[text]
    if not isinstance(value, bool):
        raise _error("autocast", value, "must be true, false or 'auto'")
    return value


def _check_api_keys(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    field = "server.api_keys"
    if not isinstance(value, Mapping):
        raise _error(field, "<hidden>", "must map each key to a list of namespaces")
    for key, namespaces in value.items():
        if not isinstance(key, str) or len(key) < 8:
            raise _error(field, "<hidden>", "each key must be a string of 8+ characters")
        if not isinstance(namespaces, (list, tuple)) or not all(
            isinstance(n, str) and n for n in namespaces
        ):
            raise _error(field, "<hidden>", "namespaces must be a list of names or '*'")


def _namespace_tuples(value: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
    """Hold each key's namespaces as a tuple (a TOML or JSON list arrives as a list)."""
    if not isinstance(value, Mapping):
        return value  # the validator names the rule
    held: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return held


def _check_template(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    sources.check_template(attribute.name, value)


def _to_path(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser()


def _record(cls: type) -> Any:
    """Validator: the section field holds a ``cls`` record (not, say, a dict)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, cls):
            rule = f"must be a {cls.__name__} (Settings.load and evolve also take a mapping)"
            raise _error(attribute.name, value, rule)

    return check


@attrs.frozen(kw_only=True)
class VllmSettings:
    """How the ``vllm`` inference backend reaches its server (``settings.vllm``).

    Attributes:
        url: Base URL of a running vLLM server (``CLAAS_VLLM_URL``).
        api_key: Bearer key for that server, if it needs one.
        max_loras: Adapter versions kept loaded in vLLM.
        timeout: Seconds before a vLLM request fails.
        sleep_during_training: Put vLLM to sleep (level 1) during local
            training steps when the server reports sleep mode enabled (GPU
            servers started with ``--enable-sleep-mode``); frees its GPU memory
            for training at the cost of a wake-up per update.
    """

    section: ClassVar[str] = "vllm"
    flat_prefix: ClassVar[str] = "vllm_"

    url: str | None = attrs.field(default=None, validator=_check_url)
    api_key: str | None = attrs.field(default=None, repr=False)
    max_loras: int = attrs.field(default=4, validator=_positive_int)
    timeout: float = attrs.field(default=120.0, validator=_positive_number)
    sleep_during_training: bool = False


@attrs.frozen(kw_only=True)
class TinkerSettings:
    """Options of the ``tinker`` engine (``settings.tinker``).

    The API key comes from ``TINKER_API_KEY`` (read by the SDK), never from settings.

    Attributes:
        loss: How the divergence loss is applied: ``sdpo`` (the exact SDPO
            objective on the teacher's top-K, computed client-side with
            ``forward_backward_custom``; two service passes) or
            ``cross_entropy`` (the built-in loss with top-K soft targets, i.e.
            forward KL, alpha 0, one pass).
    """

    section: ClassVar[str] = "tinker"
    flat_prefix: ClassVar[str] = "tinker_"

    loss: TinkerLoss = attrs.field(default="sdpo", validator=_choice(TINKER_LOSSES))


@attrs.frozen(kw_only=True)
class ModalSettings:
    """Options of the ``modal`` engine (``settings.modal``).

    Attributes:
        app: Name of the deployed Modal app.
    """

    section: ClassVar[str] = "modal"
    flat_prefix: ClassVar[str] = "modal_"

    app: str = attrs.field(default="claas", validator=_non_empty)


@attrs.frozen(kw_only=True)
class JobSettings:
    """How feedback jobs are queued and applied (``settings.jobs``).

    Attributes:
        workers: Updates applied at once by this process's worker (one per
            adapter at most; the local engine on a CPU uses one well).
        max_coalesce: Queued jobs of one adapter merged into one update (each
            job then reports the same version); 1 applies each job alone.
        max_queued_per_adapter: Jobs that may wait for one adapter before
            ``submit`` raises ``QueueFull`` (HTTP 429).
        max_queued: Jobs that may wait in all.
        lease_seconds: How long a running job's claim lasts without a
            heartbeat before another worker may take it over.
        worker: When this process applies jobs: ``auto`` (once there is one),
            ``off`` (never: an API server beside ``claas worker`` processes) or
            ``eager`` (from the start: a ``claas worker`` process).
    """

    section: ClassVar[str] = "jobs"
    flat_prefix: ClassVar[str] = "jobs_"

    workers: int = attrs.field(default=1, validator=_positive_int)
    max_coalesce: int = attrs.field(default=1, validator=_positive_int)
    max_queued_per_adapter: int = attrs.field(default=100, validator=_positive_int)
    max_queued: int = attrs.field(default=1000, validator=_positive_int)
    lease_seconds: float = attrs.field(default=30.0, validator=_positive_number)
    worker: str = attrs.field(default="auto", validator=_choice(("auto", "off", "eager")))


@attrs.frozen(kw_only=True)
class ServerSettings:
    """What the HTTP server enforces (``settings.server``); flat names have no prefix.

    Attributes:
        api_keys: API keys, each mapped to the adapter namespaces it may use
            (``"*"`` for all).
        allow_remote_without_keys: Let the server listen beyond loopback with
            no API keys configured.
        max_request_bytes: Largest HTTP body the server accepts.
    """

    section: ClassVar[str] = "server"
    flat_prefix: ClassVar[str] = ""

    api_keys: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_namespace_tuples, validator=_check_api_keys, repr=False
    )
    allow_remote_without_keys: bool = False
    max_request_bytes: int = attrs.field(default=1_000_000, validator=_positive_int)


_SECTION_RECORDS = (
    VllmSettings,
    TinkerSettings,
    ModalSettings,
    ServerSettings,
    JobSettings,
    FollowupSettings,
    GuardSettings,
)
_SECTIONS: dict[str, type] = {cls.section: cls for cls in _SECTION_RECORDS}
# Flat name (``vllm_url``, ``api_keys``) -> (section, field).
_FLAT: dict[str, tuple[str, str]] = {
    cls.flat_prefix + f.name: (cls.section, f.name)
    for cls in _SECTION_RECORDS
    for f in attrs.fields(cls)
}


@attrs.frozen(kw_only=True)
class Settings:
    """Validated, frozen configuration of a CLaaS installation.

    ``Settings(...)`` is the typed constructor: top-level fields and the nested
    records, e.g. ``Settings(inference_backend="vllm",
    vllm=VllmSettings(url="http://host:8000"))``. ``Settings.load``,
    ``Settings.from_mapping`` and ``evolve`` also take the flat names
    (``vllm_url=...``, ``api_keys=...``) and a section as a mapping
    (``vllm={"url": ...}``) that changes only the fields it names; a record
    replaces the whole section.

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
            embeddings and every log-softmax stay float32. ``auto`` (the
            default) turns it on where the device computes bfloat16 matmuls
            natively (CUDA with bfloat16, x86 CPUs with AVX512-BF16 or AMX), on
            a CPU for training only (float32 decodes faster); ``True``/``False``
            decide for both (:mod:`claas.precision`; learning: docs/eval.md).
        thinking: Enable the thinking mode of reasoning models (Qwen3) for
            student and teacher alike.
        teacher_template: How the feedback is shown to the teacher: a format
            string that replaces the last user turn, with the fields
            ``{content}`` (that turn's text) and ``{feedback}``, and optionally
            ``{response}`` (the answer the feedback is about); ``None`` uses
            :data:`claas.teacher.HINDSIGHT_TEMPLATE`.
        keep_versions: Versions retained per adapter (the live one always is).
        adapter_cache_size: Adapter versions kept loaded for inference.
        max_prompt_tokens: Longest accepted prompt.
        max_new_tokens: Upper bound on generated tokens per request.
        max_feedback_chars: Longest accepted feedback text.
        max_batch: Most feedback items accepted in one call.
        vllm: The ``vllm`` backend's server (:class:`VllmSettings`).
        tinker: The ``tinker`` engine's options (:class:`TinkerSettings`).
        modal: The ``modal`` engine's app (:class:`ModalSettings`).
        server: The HTTP server's keys and limits (:class:`ServerSettings`).
        jobs: The feedback-job queue and its worker (:class:`JobSettings`).
        database_url: A ``postgresql://`` URL: records and job queue in
            PostgreSQL, shared by many processes (``None``: SQLite in the data dir).
        followups: Learning from follow-up messages (:class:`FollowupSettings`).
        guard: The check before a version goes live (:class:`GuardSettings`).
    """

    data_dir: Path = attrs.field(factory=_default_data_dir, converter=_to_path)
    base_model: str = attrs.field(default=DEFAULT_BASE_MODEL)
    model_cache_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_path)
    )
    inference_backend: str = attrs.field(default="local", validator=_registered_name)
    training_engine: str = attrs.field(default="local", validator=_registered_name)
    device: str = attrs.field(default="auto", validator=_check_device)
    dtype: Dtype = attrs.field(default="auto", validator=_choice(DTYPES))
    autocast: bool | Literal["auto"] = attrs.field(default="auto", converter=_autocast_setting)
    thinking: bool = False
    teacher_template: str | None = attrs.field(default=None, validator=_check_template)
    keep_versions: int = attrs.field(default=20, validator=_positive_int)
    adapter_cache_size: int = attrs.field(default=4, validator=_positive_int)
    max_prompt_tokens: int = attrs.field(default=4096, validator=_positive_int)
    max_new_tokens: int = attrs.field(default=1024, validator=_positive_int)
    max_feedback_chars: int = attrs.field(default=8000, validator=_positive_int)
    max_batch: int = attrs.field(default=64, validator=_positive_int)
    vllm: VllmSettings = attrs.field(factory=VllmSettings, validator=_record(VllmSettings))
    tinker: TinkerSettings = attrs.field(factory=TinkerSettings, validator=_record(TinkerSettings))
    modal: ModalSettings = attrs.field(factory=ModalSettings, validator=_record(ModalSettings))
    server: ServerSettings = attrs.field(factory=ServerSettings, validator=_record(ServerSettings))
    jobs: JobSettings = attrs.field(factory=JobSettings, validator=_record(JobSettings))
    database_url: str | None = attrs.field(default=None, validator=_check_database_url, repr=False)
    followups: FollowupSettings = attrs.field(
        factory=FollowupSettings, validator=_record(FollowupSettings)
    )
    guard: GuardSettings = attrs.field(factory=GuardSettings, validator=_record(GuardSettings))

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
        """Return a validated copy with some fields changed.

        Args:
            **changes: Top-level fields, flat names (``vllm_url=...``), section
                mappings (``vllm={"url": ...}``, only the named fields change)
                or section records (which replace the section).

        Raises:
            InvalidConfig: On an unknown field or a bad value.
        """
        top, sections = _split(changes)
        records = {
            name: attrs.evolve(getattr(self, name), **fields) for name, fields in sections.items()
        }
        return attrs.evolve(self, **top, **records)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Build settings from a TOML file, ``CLAAS_*`` variables and keyword arguments.

        Args:
            config_file: A TOML file of settings; defaults to ``$CLAAS_CONFIG``.
            **overrides: Values that take precedence over everything else, in
                any spelling :meth:`evolve` takes; ``None`` leaves a value as
                the lower layers set it.

        Raises:
            InvalidConfig: On an unknown field, an unreadable file or a bad value.
        """
        layers: list[Mapping[str, Any]] = []
        path = config_file or os.environ.get("CLAAS_CONFIG")
        if path:
            layers.append(sources.read_toml(Path(path)))
        layers.append(sources.read_env(os.environ, _ENV_NAMES))
        layers.append({k: v for k, v in overrides.items() if v is not None})
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for layer in layers:
            layer_top, layer_sections = _split(layer)
            top.update(layer_top)
            for name, fields in layer_sections.items():
                sections.setdefault(name, {}).update(fields)
        return cls.from_mapping({**top, **sections})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from field names (flat or nested), coercing strings.

        Strings (from the environment or TOML) become the field's type:
        ``"true"`` a bool, ``"4"`` an int, ``""`` ``None`` for optional text.

        Raises:
            InvalidConfig: On an unknown field or a bad value.
        """
        top, sections = _split(values)
        records = {
            name: _SECTIONS[name](
                **{f: _coerce(f"{name}.{f}", _SECTIONS[name], f, v) for f, v in fields.items()}
            )
            for name, fields in sections.items()
        }
        converted = {name: _coerce(name, cls, name, value) for name, value in top.items()}
        try:
            return cls(**converted, **records)
        except TypeError as exc:
            raise InvalidConfig(str(exc)) from exc


def _split(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Separate top-level fields from section fields, mapping flat names onto sections.

    Returns:
        ``(top, sections)``: ``{"keep_versions": 5}`` and ``{"vllm": {"url": ...}}``.

    Raises:
        InvalidConfig: On an unknown name, or a field given twice (flat and nested).
    """
    unknown = sorted(set(values) - _ENV_NAMES - set(_SECTIONS))
    if unknown:
        raise InvalidConfig(f"unknown setting(s) {unknown}; known: {sorted(_ENV_NAMES)}")
    top = {k: v for k, v in values.items() if k in _TOP_NAMES}
    sections: dict[str, dict[str, Any]] = {}
    pairs = [(*_FLAT[k], v, k) for k, v in values.items() if k in _FLAT]
    for name in _SECTIONS:
        if name in values:
            section = _section_fields(name, values[name])
            pairs += [(name, field, v, f"{name}.{field}") for field, v in section.items()]
    seen: dict[tuple[str, str], str] = {}
    for name, field, value, given_as in pairs:
        if (name, field) in seen:
            raise InvalidConfig(
                f"setting {name}.{field} is given twice: as {seen[name, field]} and {given_as}"
            )
        seen[name, field] = given_as
        sections.setdefault(name, {})[field] = value
    return top, sections


def _section_fields(name: str, value: Any) -> dict[str, Any]:
    """The fields given for section ``name``: from a record (all) or a mapping (those named)."""
    cls = _SECTIONS[name]
    if isinstance(value, cls):
        return {f.name: getattr(value, f.name) for f in attrs.fields(cls)}
    if not isinstance(value, Mapping):
        raise _error(name, value, f"must be a {cls.__name__} or a mapping of its fields")
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidConfig(f"unknown setting(s) {unknown} in [{name}]; known: {sorted(known)}")
    return dict(value)


def _coerce(label: str, cls: type, name: str, value: Any) -> Any:
    """Turn a string value into the type of the attrs field ``cls.name``."""
    return sources.coerce(label, str(attrs.fields_dict(cls)[name].type), value)


_TOP_NAMES = frozenset(f.name for f in attrs.fields(Settings)) - set(_SECTIONS)
# Names read as ``CLAAS_<NAME>``: the top-level fields and the flat names.
_ENV_NAMES = _TOP_NAMES | set(_FLAT)
