"""Whether a device computes bfloat16 matmuls natively, and what ``autocast="auto"`` means.

``Settings.autocast`` is ``True``, ``False`` or ``"auto"`` (the default). ``auto`` turns
bfloat16 autocast on where bfloat16 matmuls run in hardware, so they are about twice as
fast as float32 ones, and off elsewhere (emulated bfloat16 is slower than float32):

- CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` (Ampere and newer);
- x86 CPUs: the ``avx512_bf16`` or ``amx_bf16`` flag, read from ``/proc/cpuinfo`` on
  Linux, elsewhere from torch's own CPU probe (``torch.cpu._is_avx512_bf16_supported``,
  which reads the same CPUID bits through the cpuinfo library);
- any other device (``mps``, other CPUs): off.

On a CPU ``auto`` is for training and batched checks only: chats decode in float32
there. Decoding one token is a matrix-vector product per layer, bound by memory and
per-op work rather than by matmul throughput, and under autocast every layer also
casts its input; on the development CPU (AMX) bfloat16 decoded at 108.5 against 84.1
ms/token in float32 (docs/benchmarks.md), while the update step ran 1.36 times faster.
(An AVX512-BF16 CPU without AMX decoded at 31.4 against 43.0 ms/token: it depends on
the CPU, so float32 stays the safe choice for chats.) The guard's batched checks
(``purpose="checks"``) run one pass over a few hundred tokens, a matmul-bound shape
whose matmuls bfloat16 computes several times as fast on either CPU (the whole
pass about twice as fast on the AVX512-BF16 one). On CUDA ``auto`` covers
all three. Explicit ``True``/``False`` apply to all of them everywhere.

The CPU is probed once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import attrs

__all__ = ["AutocastChoice", "CPU_BF16_FLAGS", "Purpose", "autocast_choice", "cpu_bf16_flags"]

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CPUINFO = Path("/proc/cpuinfo")

Purpose = Literal["training", "inference", "checks"]
"""What the model computes: the update (teacher, student, backward), chat answers, or
batched greedy checks (the guard's probes)."""


@attrs.frozen
class AutocastChoice:
    """The resolved autocast setting: on or off, and why.

    Attributes:
        enabled: Whether models run under bfloat16 autocast.
        reason: How it was decided, for display (``auto: CPU has amx_bf16``).
    """

    enabled: bool
    reason: str

    def describe(self) -> str:
        """``bfloat16 autocast (auto: ...)`` or ``float32 (...)``, for settings displays."""
        return f"{'bfloat16 autocast' if self.enabled else 'float32'} ({self.reason})"


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The native-bfloat16 CPU flags present (see :data:`CPU_BF16_FLAGS`).

    Args:
        cpuinfo: Text in the ``/proc/cpuinfo`` format; ``None`` reads this machine's
            (or, without that file, asks torch's CPU probe).
    """
    if cpuinfo is None:
        return _this_cpu_flags()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


@functools.cache
def _this_cpu_flags() -> tuple[str, ...]:
    if _CPUINFO.exists():
        return cpu_bf16_flags(_CPUINFO.read_text())
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return ("avx512_bf16",) if probe is not None and probe() else ()


def _cuda_native_bf16(device: str) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def autocast_choice(
    setting: bool | Literal["auto"],
    device: str,
    *,
    purpose: Purpose = "training",
    cpuinfo: str | None = None,
) -> AutocastChoice:
    """Resolve ``Settings.autocast`` for a resolved ``device`` (``cpu``, ``cuda:0``...).

    Args:
        setting: ``True``/``False`` (always win) or ``"auto"``.
        device: The device the models run on (not ``auto``).
        purpose: ``training`` (the engine), ``inference`` (local chats) or ``checks``
            (local batched checks); ``auto`` keeps CPU chats in float32 (see the
            module docstring).
        cpuinfo: ``/proc/cpuinfo`` text to judge instead of this machine's (tests).
    """
    if setting is not True and setting is not False:
        return _auto(device, purpose, cpuinfo)
    return AutocastChoice(setting, "autocast setting")


def _auto(device: str, purpose: Purpose, cpuinfo: str | None) -> AutocastChoice:
    kind = device.split(":")[0]
    if kind == "cuda":
        native = _cuda_native_bf16(device)
        return AutocastChoice(native, f"auto: {'' if native else 'no '}native bfloat16 on {device}")
    if kind == "cpu":
        if purpose == "inference":
            return AutocastChoice(False, "auto: CPU inference decodes faster in float32")
        flags = cpu_bf16_flags(cpuinfo)
        if flags:
            return AutocastChoice(True, f"auto: CPU has {', '.join(flags)}")
        return AutocastChoice(False, "auto: CPU has neither avx512_bf16 nor amx_bf16")
    return AutocastChoice(False, f"auto: off on {device}")
