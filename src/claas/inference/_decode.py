"""A KV-cached decode loop that records the logprob of every sampled token.

Used by local inference (and by the Modal worker). Logprobs are taken from the
untempered model distribution, as vLLM reports them, so they can serve as the
behaviour policy of the off-policy importance weight.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from claas.inference.base import Generation, StreamDelta
from claas.models import autocast_context
from claas.types import SamplingParams

__all__ = ["decode_tokens", "eos_token_ids", "last_position", "sample_token"]


def eos_token_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    """Token ids that end a turn: the tokenizer's EOS and the model's generation EOS."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return frozenset(ids)


def sample_token(
    logits_V: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None
) -> int:
    """Pick the next token: argmax when greedy, else temperature / top-k / top-p sampling."""
    if sampling.greedy:
        return int(torch.argmax(logits_V))
    scaled = logits_V / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(scaled, min(sampling.top_k, scaled.numel())).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= sampling.top_p
        scaled = scaled.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def last_position(ids_BL: torch.Tensor) -> torch.Tensor:
    """``logits_to_keep`` for the last position only, as an index rather than ``1``.

    transformers applies an integer ``logits_to_keep`` as a slice of the hidden
    states, which is not contiguous when more than one position was run; a bfloat16
    linear layer on such an input goes through a batched matmul that copies the
    whole LM head (80 ms on the bundled model, against 4 ms for the head itself).
    An index gathers a contiguous ``[B, 1, H]`` instead.
    """
    return torch.tensor([ids_BL.shape[1] - 1], device=ids_BL.device)


def _cache_keyword(model: Any) -> str:
    """Name of the KV-cache argument: ``cache`` in newer transformers, else ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (
        "cache"
        if "cache" in inspect.signature(type(base).forward).parameters
        else "past_key_values"
    )


class _Detokenizer:
    """Incremental decoding that never emits half a UTF-8 character."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.text = ""

    def update(self, ids: Sequence[int]) -> str:
        decoded = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        if decoded.endswith("\ufffd"):
            return ""
        delta = decoded[len(self.text) :] if decoded.startswith(self.text) else ""
        self.text = decoded
        return delta


def decode_tokens(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    sampling: SamplingParams,
    *,
    eos_ids: frozenset[int],
    device: str,
    autocast: bool = False,
) -> Iterator[StreamDelta]:
    """Generate up to ``sampling.max_tokens`` tokens, yielding text deltas.

    The last delta carries the complete :class:`Generation`. Stops at an
    end-of-turn token (kept in ``response_ids``) or a stop string (removed from
    the text).
    """
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    ids: list[int] = []
    logprobs: list[float] = []
    tops: list[tuple[tuple[int, float], ...]] = []
    detok = _Detokenizer(tokenizer)
    finish = "length"
    stopped_by_string = False
    inputs = torch.tensor([list(prompt_ids)], device=device)
    from transformers.cache_utils import DynamicCache

    # The cache object is filled in place, whichever keyword this version expects.
    cache = {_cache_keyword(model): DynamicCache()}
    with torch.inference_mode(), autocast_context(device, autocast):
        for _ in range(sampling.max_tokens):
            # Only the last position's logits are read: the prompt's own would be a
            # [prompt, vocabulary] matmul and tensor for nothing.
            last = last_position(inputs)
            out = model(input_ids=inputs, use_cache=True, logits_to_keep=last, **cache)
            logits = out.logits[0, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            token = sample_token(logits, sampling, generator)
            ids.append(token)
            logprobs.append(float(logp[token]))
            if sampling.top_logprobs:
                values, indices = torch.topk(logp, sampling.top_logprobs)
                tops.append(tuple(zip(indices.tolist(), values.tolist(), strict=True)))
            if token in eos_ids:
                finish = "stop"
                break
            delta = detok.update(ids)
            stop_at = _find_stop(detok.text, sampling.stop)
            if stop_at is not None:
                finish = "stop"
                visible = detok.text[:stop_at]
                emitted = len(detok.text) - len(delta)
                if len(visible) > emitted:
                    yield StreamDelta(text=visible[emitted:], token_ids=(token,))
                detok.text = visible
                stopped_by_string = True
                break
            if delta:
                yield StreamDelta(text=delta, token_ids=(token,), logprobs=(logprobs[-1],))
            inputs = torch.tensor([[token]], device=device)
    if not stopped_by_string:
        tail = detok.update(ids)
        if tail:
            yield StreamDelta(text=tail)
    yield StreamDelta(
        text="",
        generation=Generation(
            prompt_ids=tuple(int(i) for i in prompt_ids),
            response_ids=tuple(ids),
            response_logprobs=tuple(logprobs),
            raw_text=detok.text,
            finish_reason=finish,
            top_logprobs=tuple(tops),
        ),
    )


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stops if s]
    found = [p for p in positions if p >= 0]
    return min(found) if found else None
