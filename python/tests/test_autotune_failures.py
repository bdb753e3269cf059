"""scripts/cuda_dry_run/autotune_failures.py: the candidates cubecl's autotune lost to an error,
read from its cache (gpu_check.sh and cuda_dry_run.sh report them; autotune itself says nothing).
The cache here is written by the test, in the format cubecl 0.10 writes (one JSON record per
line: the key, then every candidate's outcome).
"""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cuda_dry_run" / "autotune_failures.py"


def record(*outcomes):
    return json.dumps({"key": {"m": 64}, "value": {"fastest_index": 0, "results": [
        {"outcome": o} for o in outcomes]}})


OK = {"Ok": {"name": "unit", "index": 0}}
SKIP = {"Err": {"Skip": {"name": "vecmat"}}}
NVRTC = {"Err": {"Unknown": {"name": "cyclic_cmma", "err": (
    "An execution error happened during profiling\nCaused by:\n  [Compilation Error] \n"
    "    mma.h(55): catastrophic error: cannot open source file \"crt/mma.h\"\n"
    "[Source]\n#include <mma.h>\n")}}}
TMA = {"Err": {"Unknown": {"name": "tma_cmma", "err": (
    "An execution error happened during profiling\nCaused by:\n  [Launch(An unknown error\n"
    "Caused by:\n  Tile shape must be non-zero and <= 256\nBacktrace\n")}}}
EMPTY = {"Err": {"InvalidSamples": {"name": "async_mma"}}}


def run(folder):
    r = subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_failed_candidates_are_listed_once_per_reason_with_their_keys(tmp_path):
    cache = tmp_path / "autotune" / "0.10.0" / "device-0-0-cuda"
    cache.mkdir(parents=True)
    (cache / "burn_cubecl-kernel-matmul-tune-base.json.log").write_text(
        "\n".join([record(OK, SKIP, NVRTC, TMA), record(OK, NVRTC, EMPTY), ""]))
    (cache / "burn_cubecl-kernel-conv-forward-tune.json.log").write_text(record(OK, SKIP) + "\n")
    lines = run(tmp_path / "autotune")
    failed = [line for line in lines if line.startswith("autotune candidate")]
    assert failed == [
        "autotune candidate failed: burn_cubecl-kernel-matmul-tune-base async_mma (1 keys): "
        "InvalidSamples",
        "autotune candidate failed to compile: burn_cubecl-kernel-matmul-tune-base cyclic_cmma "
        "(2 keys): mma.h(55): catastrophic error: cannot open source file \"crt/mma.h\"",
        "autotune candidate failed: burn_cubecl-kernel-matmul-tune-base tma_cmma (1 keys): "
        "Tile shape must be non-zero and <= 256",
    ]
    # The first compilation error comes in full, source included.
    assert any("#include <mma.h>" in line for line in lines)


def test_a_cache_without_failures_or_no_cache_prints_nothing(tmp_path):
    cache = tmp_path / "autotune"
    cache.mkdir()
    (cache / "x.json.log").write_text(record(OK, SKIP) + "\n")
    assert run(cache) == []
    assert run(tmp_path / "missing") == []
