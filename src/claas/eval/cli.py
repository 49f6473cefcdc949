"""Entry points: ``main(overrides)`` (for ``claas eval``) and ``python -m claas.eval``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from claas.errors import ClaasError, InvalidRequest
from claas.eval.config import compose
from claas.eval.loop import Progress, RunResult, run

__all__ = ["USAGE", "console_main", "format_table", "main", "print_progress"]

USAGE = """\
usage: python -m claas.eval [--cfg] [KEY=VALUE ...]

Teach preferences by text feedback and measure compliance, margins,
forgetting and collapse. Arguments are Hydra overrides of the packaged config:

  preference=concise                     one preference (concise, no_emoji, identity)
  'preference=[concise,no_emoji]'        several
  steps=16 batch_size=1 seed=0           the loop
  distill.learning_rate=1e-4             update hyperparameters
  data_dir=/path output_dir=/path        where adapters and run files go
  engine=remote server.url=http://host:8000 server.api_key=KEY
  'hydra.searchpath=[file:///abs/dir]'   more preferences in /abs/dir/preference/*.yaml

  --cfg    print the composed config and exit
"""


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_progress(stream: TextIO | None = None) -> Progress:
    """A progress callback printing one line per measured step (to stdout by default)."""

    def show(event: str, data: dict[str, Any]) -> None:
        if event not in ("baseline", "step"):
            return
        out = stream or sys.stdout
        m = data["metrics"]
        line = (
            f"{data['preference']:>10} step {data['step']:>3} v{data['version']:<3} "
            f"compliance {_fmt(m.get('compliance'), '.2f')}  "
            f"length {_fmt(m.get('mean_tokens'), '6.1f')} tok  "
            f"capability {_fmt(m.get('capability'), '.2f')}  "
            f"margin {_fmt(m.get('margin'), '+.2f')}  "
            f"{data.get('seconds', 0.0):5.1f}s"
        )
        print(line, file=out, flush=True)
        for alert in data.get("alerts", []):
            print(f"{'':>10} ALERT {alert}", file=out, flush=True)

    return show


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of each preference's baseline and final numbers."""
    lines = [f"run {summary['name']}: {summary['wall_seconds']:.0f} s of work"]
    for name, pref in summary["preferences"].items():
        base, final = pref["baseline"], pref["final"]
        lines.append(
            f"  {name}: compliance {_fmt(base.get('compliance'), '.2f')} -> "
            f"{_fmt(final.get('compliance'), '.2f')}, length "
            f"{_fmt(base.get('mean_tokens'), '.1f')} -> {_fmt(final.get('mean_tokens'), '.1f')} "
            f"tokens, capability {_fmt(pref['capability_before'], '.2f')} -> "
            f"{_fmt(pref['capability_after'], '.2f')}, {len(pref['alerts'])} alert(s), "
            f"adapter {pref['adapter_id']}@{pref['final_version']}"
        )
    return "\n".join(lines)


def main(overrides: Sequence[str] | None = None, *, progress: Progress | None = None) -> RunResult:
    """Compose the config from Hydra overrides, run (or resume) the eval, return the result.

    Args:
        overrides: Hydra overrides, e.g. ``["preference=concise", "steps=16"]``.
        progress: Called with ``(event, data)`` as steps finish (default: none).

    Raises:
        InvalidConfig: If an override is malformed or names an unknown key or preference.
        ClaasError: What the run raises (see :func:`claas.eval.run`).
    """
    return run(compose(list(overrides or ())), progress=progress)


def console_main(argv: Sequence[str] | None = None) -> int:
    """``python -m claas.eval``: parse arguments, run, print; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Alerts are printed with each step; keep the library's log warnings off the terminal.
    logger = logging.getLogger("claas.eval")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        if "--cfg" in args:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(compose([a for a in args if a != "--cfg"])))
            return 0
        result = main(args, progress=print_progress())
    except ClaasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidRequest) else 1
    print(format_table(result.summary))
    print(f"records, summary and plots: {result.output_dir}")
    return 0
