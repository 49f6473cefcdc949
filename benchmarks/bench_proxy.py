"""Proxy overhead: a chat through the CLaaS server against the same chat sent to vLLM.

The CLaaS server (uvicorn on loopback, vLLM backend) and vLLM get the same
OpenAI chat request -- the base model, greedy, a fixed ``max_tokens`` -- in turns,
alternating which goes first. The server adds routing, the exact token ids and
logprobs it asks vLLM for, tokenizer-free bookkeeping and a record in its database.
Goal: the median latency through the server within 5% of the median straight to vLLM.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _measure as m
from _servers import claas_server

MESSAGES = [{"role": "user", "content": "Name three uses of copper and say why it suits each."}]
MAX_TOKENS = 32
WARMUP = 3


def _chat(client: Any, url: str, model: str) -> tuple[float, int]:
    body = {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0}
    started = time.perf_counter()
    response = client.post(f"{url}/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds, int(response.json()["usage"]["completion_tokens"])


def run(options: Any) -> list[m.Row]:
    """One row: p50 through CLaaS vs p50 straight to vLLM."""
    name = f"chat p50 through CLaaS server vs straight to vLLM ({MAX_TOKENS} tokens)"
    vllm = options.vllm
    if vllm.url is None:
        return m.skipped_rows([name], vllm.reason, m.at_most(1.05))
    import httpx

    data = Path(tempfile.mkdtemp(prefix="claas-bench-proxy-"))
    try:
        with (
            claas_server(
                data,
                options.models_dir,
                env={"CLAAS_INFERENCE_BACKEND": "vllm", "CLAAS_VLLM_URL": vllm.url},
            ) as url,
            httpx.Client(timeout=300) as client,
        ):
            targets = {"direct": (vllm.url, vllm.served_name), "proxied": (url, vllm.served_name)}
            for _ in range(WARMUP):
                for target in targets.values():
                    _chat(client, *target)
            tokens: dict[str, set[int]] = {k: set() for k in targets}

            def step(key: str) -> float:
                seconds, count = _chat(client, *targets[key])
                tokens[key].add(count)
                return seconds

            print(f"[proxy] {options.proxy_requests} request pairs", file=sys.stderr)
            series = m.interleave(
                options.proxy_requests,
                {"direct": lambda: step("direct"), "proxied": lambda: step("proxied")},
            )
    except (RuntimeError, httpx.HTTPError) as exc:
        return m.skipped_rows([name], f"failed: {str(exc)[-300:]}", m.at_most(1.05))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    direct, proxied = series["direct"], series["proxied"]
    return [
        m.Row(
            name=name,
            measured=f"{m.median(proxied) * 1000:.0f} ms",
            reference=f"{m.median(direct) * 1000:.0f} ms",
            ratio=m.median(proxied) / m.median(direct),
            goal=m.at_most(1.05),
            note=(
                f"{len(direct)} pairs; median of per-pair ratios "
                f"{m.median_ratio(proxied, direct):.3g}; completion tokens direct "
                f"{sorted(tokens['direct'])}, proxied {sorted(tokens['proxied'])}"
            ),
        )
    ]
