"""``Settings.autocast``: ``auto`` (the default) per device and purpose; explicit values win."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from claas import InvalidConfig, Settings
from claas.precision import autocast_choice, cpu_bf16_flags

# Trimmed /proc/cpuinfo of two real CPUs: a Sapphire Rapids core (AMX and AVX512-BF16)
# and a Skylake server core (AVX-512 without bfloat16).
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni
"""


def test_default_is_auto_and_every_source_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().autocast == "auto"
    monkeypatch.setenv("CLAAS_AUTOCAST", "AUTO")
    assert Settings.load().autocast == "auto"
    monkeypatch.setenv("CLAAS_AUTOCAST", "off")
    assert Settings.load().autocast is False
    config = tmp_path / "claas.toml"
    config.write_text('[claas]\nautocast = "auto"\n')
    assert Settings.load(config, autocast=None).autocast is False  # env beats the file
    monkeypatch.delenv("CLAAS_AUTOCAST")
    assert Settings.load(config).autocast == "auto"
    config.write_text("[claas]\nautocast = true\n")
    assert Settings.load(config).autocast is True
    assert Settings().evolve(autocast="false").autocast is False


@pytest.mark.parametrize("value", ["maybe", 2, None])
def test_other_values_are_rejected(value: object) -> None:
    with pytest.raises(InvalidConfig, match="autocast"):
        Settings(autocast=value)  # type: ignore[arg-type]


def test_cpu_flags_decide_auto() -> None:
    assert cpu_bf16_flags(SAPPHIRE_RAPIDS) == ("avx512_bf16", "amx_bf16")
    assert cpu_bf16_flags(SKYLAKE) == ()
    on = autocast_choice("auto", "cpu", cpuinfo=SAPPHIRE_RAPIDS)
    assert on.enabled and "amx_bf16" in on.reason
    assert on.describe().startswith("bfloat16 autocast (auto: CPU has avx512_bf16")
    off = autocast_choice("auto", "cpu", cpuinfo=SKYLAKE)
    assert not off.enabled and off.describe().startswith("float32 (auto:")


def test_auto_keeps_cpu_inference_in_float32() -> None:
    decoding = autocast_choice("auto", "cpu", purpose="inference", cpuinfo=SAPPHIRE_RAPIDS)
    assert not decoding.enabled and "float32" in decoding.reason
    forced = autocast_choice(True, "cpu", purpose="inference", cpuinfo=SKYLAKE)
    assert forced.enabled  # an explicit value applies to inference too


def test_auto_runs_batched_checks_in_bfloat16_where_native() -> None:
    checks = autocast_choice("auto", "cpu", purpose="checks", cpuinfo=SAPPHIRE_RAPIDS)
    assert checks.enabled and "amx_bf16" in checks.reason
    assert not autocast_choice("auto", "cpu", purpose="checks", cpuinfo=SKYLAKE).enabled
    assert not autocast_choice(False, "cpu", purpose="checks", cpuinfo=SAPPHIRE_RAPIDS).enabled


def test_explicit_values_win_over_the_hardware() -> None:
    assert not autocast_choice(False, "cpu", cpuinfo=SAPPHIRE_RAPIDS).enabled
    forced = autocast_choice(True, "cpu", cpuinfo=SKYLAKE)
    assert forced.enabled and forced.reason == "autocast setting"


def test_auto_is_off_on_other_devices() -> None:
    assert not autocast_choice("auto", "mps").enabled


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_auto_is_off_on_cuda_without_a_gpu() -> None:
    assert not autocast_choice("auto", "cuda").enabled


def test_this_machine_is_judged_by_its_own_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    expected = cpu_bf16_flags(cpuinfo.read_text())
    assert autocast_choice("auto", "cpu").enabled == bool(expected)
    assert cpu_bf16_flags() == expected
