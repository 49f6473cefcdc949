"""The eval's typed configuration and its Hydra composition.

Hydra composes ``conf/config.yaml`` with the selected ``conf/preference/*.yaml``
and the command-line overrides; :meth:`EvalConfig.from_mapping` then turns the
result into validated, frozen attrs records (verifiers instantiated from their
``_target_``), so the loop never reads a raw dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from claas.config import DEFAULT_BASE_MODEL
from claas.errors import InvalidConfig, missing_extra
from claas.types import DistillConfig, validate_adapter_id

__all__ = [
    "ALERT_KEYS",
    "METRIC_FAMILIES",
    "Anchor",
    "Capability",
    "EvalConfig",
    "Pair",
    "Preference",
    "Sampling",
    "Server",
    "compose",
]

CONFIG_MODULE = "claas.eval.conf"
METRIC_FAMILIES = ("margin", "capability", "collapse")
ALERT_KEYS = (
    "entropy_drop",
    "max_self_similarity",
    "max_repetition",
    "max_logprob_drift",
    "max_capability_drop",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def _error(owner: str, field: str, value: object, rule: str) -> InvalidConfig:
    return InvalidConfig(f"{owner}.{field}={value!r} is invalid: {rule}")


def _int_at_least(owner: str, low: int) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _error(owner, attribute.name, value, f"must be an integer >= {low}")

    return check


def _text(owner: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise _error(owner, attribute.name, value, "must be a non-empty string")

    return check


def _texts(owner: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise _error(owner, attribute.name, value, "must be a list of non-empty strings")

    return check


def _name(owner: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            rule = "1-40 characters of A-Z a-z 0-9 _ - starting with a letter or digit"
            raise _error(owner, attribute.name, value, rule)

    return check


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _optional_path(value: Any) -> Path | None:
    return None if value is None or value == "" else Path(value).expanduser()


@attrs.frozen(kw_only=True)
class Pair:
    """A prompt with a preferred and a dispreferred response (for logprob margins)."""

    prompt: str = attrs.field(validator=_text("Pair"))
    preferred: str = attrs.field(validator=_text("Pair"))
    dispreferred: str = attrs.field(validator=_text("Pair"))


@attrs.frozen(kw_only=True)
class Anchor:
    """A fixed prompt and response whose mean logprob is tracked for drift."""

    prompt: str = attrs.field(validator=_text("Anchor"))
    response: str = attrs.field(validator=_text("Anchor"))


@attrs.frozen(kw_only=True)
class Preference:
    """One preference to teach and measure.

    Attributes:
        name: Short name (also part of the adapter id).
        feedback: The text feedback given on every training response.
        followup: What the user writes next after a rejected answer in
            ``mode: followup`` (``None``: the ``feedback`` text).
        verifier: ``text -> bool``: does a response comply?
        prompts: Training prompts; sampled answers to these get the feedback.
        probes: Held-out prompts answered greedily after every step.
        pairs: Preferred/dispreferred responses for logprob margins.
        facts: Per held-out probe, the key facts (word starts) one of which its
            answer must still contain: the ``content_kept`` metric.
    """

    name: str = attrs.field(validator=_name("Preference"))
    feedback: str = attrs.field(validator=_text("Preference"))
    verifier: Callable[[str], bool]
    prompts: tuple[str, ...] = attrs.field(converter=_tuple, validator=_texts("Preference"))
    probes: tuple[str, ...] = attrs.field(converter=_tuple, validator=_texts("Preference"))
    pairs: tuple[Pair, ...] = attrs.field(default=(), converter=_tuple)
    followup: str | None = None
    facts: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.followup is not None:
            _text("Preference")(self, attrs.fields(Preference).followup, self.followup)
        unknown = sorted(set(self.facts) - set(self.probes))
        if unknown:
            raise InvalidConfig(f"preference {self.name!r}: facts for unknown probes {unknown}")
        if not callable(self.verifier):
            raise _error("Preference", "verifier", self.verifier, "must be a callable text->bool")
        if not self.prompts or not self.probes:
            raise InvalidConfig(f"preference {self.name!r} needs prompts and probes")


@attrs.frozen(kw_only=True)
class Sampling:
    """Decoding options (``temperature == 0`` is greedy)."""

    max_tokens: int = attrs.field(default=120, validator=_int_at_least("Sampling", 1))
    temperature: float = 0.7

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise _error("Sampling", "temperature", self.temperature, "must be >= 0")


@attrs.frozen(kw_only=True)
class Capability:
    """How often and how long the capability probes run (0: baseline and end only)."""

    every: int = attrs.field(default=4, validator=_int_at_least("Capability", 0))
    max_tokens: int = attrs.field(default=48, validator=_int_at_least("Capability", 1))


@attrs.frozen(kw_only=True)
class Server:
    """A running CLaaS server (``engine: remote``)."""

    url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    timeout: float = 600.0


def _check_alerts(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    unknown = sorted(set(value) - set(ALERT_KEYS))
    if unknown:
        raise _error("EvalConfig", "alerts", unknown, f"unknown keys; known: {ALERT_KEYS}")
    for key, limit in value.items():
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
            raise _error("EvalConfig", f"alerts.{key}", limit, "must be a number or null")


def _check_metrics(_: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    unknown = sorted(set(value) - set(METRIC_FAMILIES))
    if unknown:
        raise _error("EvalConfig", "metrics", unknown, f"choose from {METRIC_FAMILIES}")


@attrs.frozen(kw_only=True)
class EvalConfig:
    """A complete, validated eval run description (see ``conf/config.yaml``)."""

    preferences: tuple[Preference, ...] = attrs.field(converter=_tuple)
    engine: str = "local"
    mode: str = "feedback"
    base_model: str = DEFAULT_BASE_MODEL
    data_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    server: Server = attrs.field(factory=Server)
    namespace: str = attrs.field(default="eval", validator=_name("EvalConfig"))
    run_name: str | None = None
    output_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    fresh: bool = False
    steps: int = attrs.field(default=16, validator=_int_at_least("EvalConfig", 0))
    batch_size: int = attrs.field(default=1, validator=_int_at_least("EvalConfig", 1))
    steps_per_batch: int = attrs.field(default=1, validator=_int_at_least("EvalConfig", 1))
    seed: int = attrs.field(default=0, validator=_int_at_least("EvalConfig", 0))
    lora: Mapping[str, Any] = attrs.field(factory=dict)
    distill: DistillConfig = attrs.field(factory=DistillConfig)
    sampling: Sampling = attrs.field(factory=Sampling)
    measure: Sampling = attrs.field(factory=lambda: Sampling(temperature=0.0))
    top_logprobs: int = attrs.field(default=20, validator=_int_at_least("EvalConfig", 0))
    capability: Capability = attrs.field(factory=Capability)
    metrics: tuple[str, ...] = attrs.field(
        default=METRIC_FAMILIES, converter=_tuple, validator=_check_metrics
    )
    alerts: Mapping[str, float | None] = attrs.field(factory=dict, validator=_check_alerts)
    anchors: tuple[Anchor, ...] = attrs.field(default=(), converter=_tuple)
    plots: bool = True

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("feedback", "followup"):
            raise _error("EvalConfig", "mode", self.mode, "must be 'feedback' or 'followup'")
        if self.engine not in ("local", "remote"):
            raise _error("EvalConfig", "engine", self.engine, "must be 'local' or 'remote'")
        if self.engine == "remote" and not self.server.url:
            raise InvalidConfig("engine=remote needs server.url (a running CLaaS server)")
        if not self.preferences:
            raise InvalidConfig("select at least one preference, e.g. preference=concise")
        names = [p.name for p in self.preferences]
        if len(set(names)) != len(names):
            raise _error("EvalConfig", "preferences", names, "names must be unique")
        if self.run_name is not None:
            _name("EvalConfig")(self, attrs.fields(EvalConfig).run_name, self.run_name)
        for preference in self.preferences:
            validate_adapter_id(self.adapter_id(preference.name))
        if "collapse" in self.metrics and not self.anchors:
            raise InvalidConfig("the collapse metrics need at least one anchor (anchors: [...])")

    @property
    def name(self) -> str:
        """The run name: ``run_name`` or ``<preferences>-seed<seed>``."""
        if self.run_name is not None:
            return self.run_name
        return "-".join([*(p.name for p in self.preferences), f"seed{self.seed}"])[:40]

    def adapter_id(self, preference: str) -> str:
        """The adapter the run trains for ``preference``."""
        return f"{self.namespace}/{self.name}-{preference}"

    def resolved_data_dir(self) -> Path:
        """``data_dir``, or the CLaaS default (``$CLAAS_DATA_DIR`` or ``~/.claas``)."""
        if self.data_dir is not None:
            return self.data_dir
        from claas.config import Settings

        return Settings.load().data_dir

    def resolved_output_dir(self) -> Path:
        """``output_dir``, or ``<data_dir>/eval/<run name>``."""
        return self.output_dir or self.resolved_data_dir() / "eval" / self.name

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {
            "preferences": [p.name for p in self.preferences],
            "engine": self.engine,
            "mode": self.mode,
            "base_model": self.base_model,
            "server_url": self.server.url,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "distill": self.distill.to_dict(),
            "lora": dict(self.lora),
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EvalConfig:
        """Build from a composed config (a plain mapping or an OmegaConf node).

        Raises:
            InvalidConfig: On an unknown key or a value that breaks its rule.
        """
        values = _plain(data)
        known = {f.name for f in attrs.fields(cls)} - {"preferences"} | {"preference"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidConfig(f"unknown eval setting(s) {unknown}; known: {sorted(known)}")
        prefs = values.pop("preference", None) or {}
        steps_per_batch = values.get("steps_per_batch", 1)
        distill = dict(values.pop("distill", None) or {})
        if "steps" in distill:
            raise InvalidConfig("set optimizer steps per batch with steps_per_batch, not distill")
        try:
            return cls(
                preferences=[_preference(name, spec) for name, spec in prefs.items()],
                distill=DistillConfig.from_dict({**distill, "steps": steps_per_batch}),
                server=Server(**(values.pop("server", None) or {})),
                sampling=Sampling(**(values.pop("sampling", None) or {})),
                measure=Sampling(**{"temperature": 0.0, **(values.pop("measure", None) or {})}),
                capability=Capability(**(values.pop("capability", None) or {})),
                anchors=[Anchor(**a) for a in values.pop("anchors", None) or ()],
                settings=values.pop("settings", None) or {},
                lora=values.pop("lora", None) or {},
                alerts=values.pop("alerts", None) or {},
                **values,
            )
        except TypeError as exc:
            raise InvalidConfig(f"eval config: {exc}") from exc


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain dict from an OmegaConf node or a mapping."""
    if type(data).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            container = OmegaConf.to_container(data, resolve=True)  # type: ignore[call-overload]
        except OmegaConfBaseException as exc:
            raise InvalidConfig(f"eval config: {exc}") from exc
        assert isinstance(container, dict)
        return {str(k): v for k, v in container.items()}
    return dict(data)


def _preference(name: str, spec: Mapping[str, Any]) -> Preference:
    if not isinstance(spec, Mapping):
        raise InvalidConfig(f"preference {name!r} must be a mapping, got {type(spec).__name__}")
    fields = {"feedback", "followup", "verifier", "prompts", "probes", "pairs", "facts"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise InvalidConfig(f"preference {name!r} has unknown key(s) {unknown}; known: {fields}")
    try:
        return Preference(
            name=name,
            feedback=spec.get("feedback") or "",
            verifier=_instantiate(name, spec.get("verifier")),
            prompts=spec.get("prompts") or (),
            probes=spec.get("probes") or (),
            pairs=[Pair(**p) for p in spec.get("pairs") or ()],
            followup=spec.get("followup"),
            facts={str(k): tuple(v) for k, v in (spec.get("facts") or {}).items()},
        )
    except TypeError as exc:
        raise InvalidConfig(f"preference {name!r}: {exc}") from exc


def _instantiate(name: str, verifier: Any) -> Callable[[str], bool]:
    """Build a verifier from a ``{_target_: ...}`` mapping (or take a callable as is)."""
    if callable(verifier):
        return verifier  # type: ignore[no-any-return]
    if not isinstance(verifier, Mapping) or "_target_" not in verifier:
        raise InvalidConfig(f"preference {name!r} needs a verifier: {{_target_: ..., ...}}")
    try:
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate
    except ImportError as exc:
        raise missing_extra("hydra", "eval") from exc
    try:
        built = instantiate(dict(verifier))
    except InstantiationException as exc:
        raise InvalidConfig(f"preference {name!r}: cannot build its verifier: {exc}") from exc
    if not callable(built):
        raise InvalidConfig(f"preference {name!r}: verifier {verifier['_target_']} is not callable")
    return built  # type: ignore[no-any-return]


def compose(overrides: Sequence[str] = ()) -> Any:
    """Compose the packaged config with Hydra overrides and return the DictConfig.

    Args:
        overrides: Hydra overrides, e.g. ``["preference=[concise,no_emoji]", "steps=4"]``;
            ``hydra.searchpath=[file:///my/conf]`` adds a directory with more
            ``preference/*.yaml`` files.

    Raises:
        InvalidConfig: If an override does not parse or names an unknown key or option.
        MissingDependency: If hydra-core is not installed.
    """
    try:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_module
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException
        from yaml import YAMLError
    except ImportError as exc:
        raise missing_extra("hydra", "eval") from exc
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, YAMLError) as exc:
        # A user's preference file with a YAML syntax error surfaces as YAMLError.
        raise InvalidConfig(f"eval config: {exc}") from exc
