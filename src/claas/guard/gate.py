"""Running the guard: ask the probes of a candidate and its parent, then decide.

The answers come from the inference backend that serves the adapter (it has
the base model in memory already): greedy, short, and batched when the
backend offers :class:`BatchAnswerer` (the local backend does). The parent's
answers are remembered per version, so an update pays for its candidate's
answers only, and a candidate that goes live hands its answers on as the next
parent's.

A candidate's answers start from its parent's (:class:`DraftAnswerer`, local
backend): one forward pass over every probe with the parent's answer appended tells,
per probe, how many of those tokens are the candidate's own greedy choices and which
token it picks where it departs. Where the parent's answer holds to its end, it is
the candidate's; elsewhere decoding goes on from the first token that differs. One
small update leaves most probe answers as they were, or changes their ends, so this
replaces most of the decoding. A parent not asked since the process started is
checked the same way against the answers its own verdict recorded.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from claas.config import Settings
from claas.guard.probes import GUARD_PROBES, Probe, user_probe
from claas.guard.verdict import Answers, Verdict, decide
from claas.inference._settled import Settled, settled_at
from claas.inference.base import InferenceBackend
from claas.teacher import ChatTokenizer, encode_chat
from claas.thinking import visible_text
from claas.types import AdapterVersion, ChatMessage, SamplingParams

__all__ = ["BatchAnswerer", "DraftAnswerer", "Gate"]

_CACHED = 64
_WORD = re.compile(r"\w")  # a token whose text starts with this continues a word


@runtime_checkable
class BatchAnswerer(Protocol):
    """A backend that answers and scores several encoded prompts in one batch."""

    def answer_batch(
        self, prompts: Sequence[Sequence[int]], *, adapter: AdapterVersion | None, max_tokens: int
    ) -> list[tuple[list[int], list[float]]]:
        """Greedy answers: token ids and their logprobs, per prompt."""
        ...

    def score_batch(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        adapter: AdapterVersion | None,
    ) -> list[list[float]]:
        """Logprob of each response token of each (prompt, response) pair."""
        ...


@runtime_checkable
class DraftAnswerer(Protocol):
    """A backend that answers greedily from known draft answers (see the module docstring)."""

    def answer_batch_from_drafts(
        self,
        prompts: Sequence[Sequence[int]],
        drafts: Sequence[Sequence[int]],
        *,
        adapter: AdapterVersion | None,
        max_tokens: int,
        lookup: Sequence[Sequence[Sequence[int]]] = (),
        settled: Sequence[Settled | None] = (),
    ) -> list[tuple[list[int], list[float]]]:
        """Greedy answers (token ids and logprobs) per prompt, each checked against its draft.

        ``lookup`` holds, per prompt, other known answers to it (earlier versions'),
        to guess from where an answer departs from its draft. ``settled`` holds, per
        prompt, a rule that ends its answer at the fewest leading tokens it accepts.
        """
        ...


@attrs.frozen
class _Asked:
    """One version's answers with the token ids they were generated as."""

    answers: Answers
    tokens: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (prompt ids, response ids)


class Gate:
    """Judges candidate versions for one learner (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._known: dict[tuple[Any, ...], _Asked] = {}
        self._lock = threading.Lock()

    def judge(
        self,
        backend: InferenceBackend,
        tokenizer: ChatTokenizer,
        parent: AdapterVersion,
        candidate: AdapterVersion,
        user_probes: Sequence[Mapping[str, Any]] = (),
    ) -> Verdict:
        """The verdict on ``candidate`` against ``parent`` (``measures`` includes the seconds)."""
        started = time.perf_counter()
        probes = (*GUARD_PROBES, *(user_probe(p) for p in user_probes))
        before = self._asked(backend, tokenizer, parent, probes)
        after = self._ask(backend, tokenizer, candidate, probes, known=before)
        answers = after.answers
        if self._settings.guard.mode == "strict":  # one more forward pass, so only when used
            scored = _score(backend, list(before.tokens), candidate)
            answers = attrs.evolve(answers, anchor_logprob=_mean(scored))
        verdict = decide(before.answers, answers, self._settings.guard)
        if verdict.passed:
            self._remember(candidate, probes, after)
        seconds = time.perf_counter() - started
        return attrs.evolve(verdict, measures={**verdict.measures, "guard_seconds": seconds})

    def _key(self, version: AdapterVersion, probes: Sequence[Probe]) -> tuple[Any, ...]:
        prompts = tuple(p.prompt for p in probes)
        if version.parent is None:  # a fresh adapter answers as the base model does
            return ("base", version.base_model, prompts, self._max_tokens)
        return (version.adapter_id, version.version, version.path, prompts, self._max_tokens)

    @property
    def _max_tokens(self) -> int:
        return self._settings.guard.max_tokens

    def _asked(
        self,
        backend: InferenceBackend,
        tokenizer: ChatTokenizer,
        version: AdapterVersion,
        probes: Sequence[Probe],
    ) -> _Asked:
        with self._lock:
            known = self._known.get(self._key(version, probes))
        if known is None:
            recorded = _recorded(version, probes)
            known = self._ask(backend, tokenizer, version, probes, recorded=recorded)
            self._remember(version, probes, known)
        return known

    def _remember(self, version: AdapterVersion, probes: Sequence[Probe], asked: _Asked) -> None:
        with self._lock:
            if len(self._known) >= _CACHED:
                self._known.pop(next(iter(self._known)))
            self._known[self._key(version, probes)] = asked

    def _ask(
        self,
        backend: InferenceBackend,
        tokenizer: ChatTokenizer,
        version: AdapterVersion,
        probes: Sequence[Probe],
        *,
        known: _Asked | None = None,
        recorded: Sequence[str] | None = None,
    ) -> _Asked:
        """``version``'s greedy answers, checked first against drafts where there are any.

        The drafts are ``known`` answers (its parent's), or else ``recorded`` answer
        texts (its own, from its verdict), re-encoded.
        """
        thinking = self._settings.thinking
        # Version 0 equals the base model (the engine's contract), so every new
        # adapter shares the base model's answers and no slot is loaded for them.
        adapter = None if version.parent is None else version
        chats = [[ChatMessage(role="user", content=p.prompt)] for p in probes]
        prompts = [tuple(encode_chat(tokenizer, chat, thinking=thinking)) for chat in chats]
        rules = [_settled_rule(tokenizer, p) for p in probes]
        if isinstance(backend, DraftAnswerer) and (
            drafts := self._drafts(tokenizer, known, recorded, prompts)
        ):
            answered = backend.answer_batch_from_drafts(
                prompts,
                drafts,
                adapter=adapter,
                max_tokens=self._max_tokens,
                lookup=self._earlier_answers(prompts),
                settled=rules,
            )
        elif isinstance(backend, BatchAnswerer):
            answered = _cut(
                backend.answer_batch(prompts, adapter=adapter, max_tokens=self._max_tokens), rules
            )
        else:
            greedy = SamplingParams(temperature=0.0, max_tokens=self._max_tokens, seed=0)
            made = [backend.generate(c, adapter=adapter, sampling=greedy) for c in chats]
            prompts = [g.prompt_ids for g in made]
            decoded = [(list(g.response_ids), list(g.response_logprobs)) for g in made]
            answered = _cut(decoded, rules)
        texts = [
            visible_text(str(tokenizer.decode(ids, skip_special_tokens=True)))
            for ids, _ in answered
        ]
        own = [lp for _, logprobs in answered for lp in logprobs]
        answers = Answers(
            prompts=tuple(p.prompt for p in probes),
            kinds=tuple(p.kind for p in probes),
            texts=tuple(texts),
            passed=tuple(bool(p.check(t)) for p, t in zip(probes, texts, strict=True)),
            anchor_logprob=sum(own) / len(own) if own else None,
        )
        tokens = tuple(
            (tuple(p), tuple(ids)) for p, (ids, _) in zip(prompts, answered, strict=True)
        )
        return _Asked(answers=answers, tokens=tokens)

    def _earlier_answers(self, prompts: Sequence[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
        """Per prompt, the distinct answers remembered for it, the most recent first.

        A small update often takes an answer back to what an earlier version said
        (the drafts are only the parent's), so these are guessed from when decoding.
        """
        with self._lock:
            asked = list(self._known.values())
        earlier: dict[tuple[int, ...], list[tuple[int, ...]]] = {p: [] for p in prompts}
        for known in reversed(asked):
            for prompt, response in known.tokens:
                seen = earlier.get(prompt)
                if seen is not None and response not in seen:
                    seen.append(response)
        return [earlier[p] for p in prompts]

    def _drafts(
        self,
        tokenizer: ChatTokenizer,
        known: _Asked | None,
        recorded: Sequence[str] | None,
        prompts: Sequence[tuple[int, ...]],
    ) -> list[tuple[int, ...]] | None:
        """Known answers to these very prompts as drafts, else recorded texts re-encoded."""
        if known is not None and [p for p, _ in known.tokens] == list(prompts):
            return [response for _, response in known.tokens]
        if recorded is not None:
            return [_encoded(tokenizer, text, self._max_tokens) for text in recorded]
        return None


def _settled_rule(tokenizer: ChatTokenizer, probe: Probe) -> Settled:
    """Whether an answer's tokens so far settle ``probe``: its check passes on them
    once the last word it read is complete (the next token starts no word).

    A check that passes then passes on any longer answer, so decoding stops there;
    the last token, which shows the word complete, is kept.
    """

    def text(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True))

    def settled(ids: Sequence[int]) -> bool:
        if len(ids) < 2:
            return False
        head, whole = text(ids[:-1]), text(ids)
        if not whole.startswith(head) or _WORD.match(whole, len(head)) or whole == head:
            return False
        return bool(probe.check(visible_text(head)))

    return settled


def _cut(
    answered: Sequence[tuple[list[int], list[float]]], rules: Sequence[Settled]
) -> list[tuple[list[int], list[float]]]:
    """Answers decoded to their end, each cut where its rule would have stopped decoding
    (as :meth:`DraftAnswerer.answer_batch_from_drafts` stops it)."""
    cut = []
    for (ids, logprobs), rule in zip(answered, rules, strict=True):
        end = settled_at(ids, rule)
        cut.append((ids, logprobs) if end is None else (ids[:end], logprobs[:end]))
    return cut


def _recorded(version: AdapterVersion, probes: Sequence[Probe]) -> list[str] | None:
    """The answers to ``probes`` its verdict recorded for ``version``, if it has them all.

    A verdict keeps the judged version's answer texts; after a restart they are its
    drafts when it is the parent, so it is not decoded afresh. A verdict file is
    data from disk (an older one may lack answers), hence the checks.
    """
    answers = (version.verdict or {}).get("answers")
    if not isinstance(answers, Mapping):
        return None
    texts = [answers.get(p.prompt) for p in probes]
    if not all(isinstance(t, str) for t in texts):
        return None
    return [str(t) for t in texts]


def _encoded(tokenizer: ChatTokenizer, text: str, max_tokens: int) -> tuple[int, ...]:
    """A recorded answer's text as a draft: its tokens, and the end of turn if it is short.

    Only a draft: where re-encoding or the guessed end differs from the greedy
    tokens, the check finds the first difference and decodes on from there.
    """
    ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False)][:max_tokens]
    if len(ids) < max_tokens and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)


def _score(
    backend: InferenceBackend,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    version: AdapterVersion,
) -> list[float]:
    """Every logprob the version gives the anchor answers' tokens, flattened."""
    pairs = [(p, r) for p, r in pairs if r]
    if not pairs:
        return []
    if isinstance(backend, BatchAnswerer):
        rows = backend.score_batch(pairs, adapter=version)
    else:
        rows = [backend.score(p, r, adapter=version) for p, r in pairs]
    return [lp for row in rows for lp in row]


def _mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    total = math.fsum(values) / len(values)
    return total if math.isfinite(total) else -math.inf
