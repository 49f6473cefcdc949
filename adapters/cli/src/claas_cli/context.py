"""The root options every command shares, and how commands get a Learner from them.

Commands that take ``--url`` work on a :class:`claas.LearnerLike`: the
in-process :class:`~claas.Learner`, or a :class:`claas.Client` of the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import typer

from claas import LearnerLike, Settings
from claas_cli.output import Output

if TYPE_CHECKING:
    from claas.learner import Learner

__all__ = [
    "ApiKeyOpt",
    "CliState",
    "JsonOpt",
    "UrlOpt",
    "make_learner",
    "open_client",
    "state_of",
]


def make_learner(settings: Settings) -> Learner:
    """Build the in-process Learner; the one place the CLI constructs it."""
    from claas.learner import Learner

    return Learner(settings)


@attrs.define
class CliState:
    """Options given before the command name (``claas --data-dir D adapters ls``).

    Unset options fall back to ``CLAAS_*`` variables, then the config file,
    then the defaults (see :meth:`claas.Settings.load`).
    """

    data_dir: Path | None = None
    config: Path | None = None
    base_model: str | None = None
    out: Output = attrs.field(factory=Output)

    def settings(self, **overrides: Any) -> Settings:
        """Settings from the config file, the environment and these options."""
        return Settings.load(
            config_file=self.config,
            data_dir=self.data_dir,
            base_model=self.base_model,
            **overrides,
        )

    def learner(self) -> Learner:
        """A Learner on :meth:`settings`."""
        return make_learner(self.settings())


def state_of(ctx: typer.Context, *, json: bool = False) -> CliState:
    """The shared state; ``json`` switches this command's output to JSON."""
    state = ctx.find_object(CliState)
    if state is None:  # a command invoked without the root callback (library use)
        state = ctx.ensure_object(CliState)
    if json:
        state.out.json = True
    return state


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="CLAAS_URL",
        help="Base URL of a running CLaaS server; without it the model runs in this process.",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="CLAAS_API_KEY", help="Bearer key for the server."),
]


def open_client(state: CliState, url: str | None, api_key: str | None) -> LearnerLike:
    """A client of the server at ``url``, or an in-process Learner without one.

    Raises:
        InvalidRequest: If ``url`` is not an http(s) URL.
    """
    if url is None:
        return state.learner()
    from claas.client import Client

    return Client(url, api_key)
