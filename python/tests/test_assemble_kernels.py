"""scripts/cuda_dry_run/assemble_kernels.py: cubecl-cuda's kernel cache with every PTX replaced
by the cubin the assembler makes of it (gpu_check.sh then starts from cubins on the device).
The cache is written here in the shape cubecl 0.10 writes it (ciborium: one CBOR record per
kernel, the PTX as an array of signed chars); a stand-in for ptxas makes the "cubins", so the
test needs no CUDA.
"""
import io
import subprocess
import sys
from pathlib import Path

import cbor2

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cuda_dry_run" / "assemble_kernels.py"

# ptxas' command line (-arch=A -o OUT IN): an "ELF" holding the arch, the PTX reversed and the
# entry point's name; a PTX that says `bad` is refused, as ptxas refuses a broken module.
FAKE_PTXAS = """#!/usr/bin/env python3
import re, sys
arch, out, src = sys.argv[1][6:], sys.argv[4], sys.argv[5]
assert sys.argv[2] == "--suppress-debug-info"
ptx = open(src, "rb").read()
if b"bad" in ptx or ptx.endswith(b"\\0"):
    sys.exit("ptxas " + src + ", line 3; error   : Unknown symbol 'bad'")
name = re.search(rb"\\.entry (\\w+)\\(", ptx)[1]
open(out, "wb").write(b"\\x7fELF" + arch.encode() + b"|" + ptx[::-1] + b"|\\xff\\x80" + name + b"\\0")
"""


def signed(data):
    return [b - 256 if b > 127 else b for b in data]


def record(key, name, body):
    ptx = f".version 8.0\n.target sm_90a\n.visible .entry {name}(\n)\n{{ {body} }}\n\0".encode()
    return {"key": key, "value": {"entrypoint_name": name, "shared_mem_bytes": 1024,
                                  "ptx": signed(ptx)}}


def write_cache(root, records, tail=b""):
    chunk = root / "cuda" / "0.10.0" / "ptx" / "chunk0.cbor"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"".join(cbor2.dumps(r) for r in records) + tail)
    (chunk.parent / "toc.json.log").write_text("table of contents, left as it is\n")
    return chunk


def read_cache(chunk):
    data, out = chunk.read_bytes(), []
    f = io.BytesIO(data)
    while f.tell() < len(data):
        out.append(cbor2.load(f))
    return out


def run(cache, ptxas):
    return subprocess.run([sys.executable, str(SCRIPT), str(cache), "--ptxas", str(ptxas),
                           "--arch", "sm_90a", "--jobs", "2"], capture_output=True, text=True)


def fake_ptxas(tmp_path):
    ptxas = tmp_path / "ptxas"
    ptxas.write_text(FAKE_PTXAS)
    ptxas.chmod(0o755)
    return ptxas


def test_each_ptx_becomes_its_cubin_and_a_refused_one_keeps_its_ptx(tmp_path):
    big_key = 2**127 + 12345  # keys are u128 stable hashes: CBOR bignums past 2**64
    records = [record(big_key, "elemwise_fused", "ret;"), record(7, "conv_direct", "bad;"),
               record(8, "matmul_cmma", "ret; ret;")]
    chunk = write_cache(tmp_path / "cache", records)
    r = run(tmp_path / "cache", fake_ptxas(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "3 kernels, 2 assembled for sm_90a, 0 were cubins, 1 kept as PTX" in r.stdout
    assert "kept as PTX: conv_direct: ptxas" in r.stdout and "Unknown symbol 'bad'" in r.stdout

    after = read_cache(chunk)
    assert [a["key"] for a in after] == [big_key, 7, 8]
    assert after[1] == records[1]
    for before, now in zip([records[0], records[2]], [after[0], after[2]]):
        ptx = bytes(v & 0xFF for v in before["value"]["ptx"]).rstrip(b"\0")
        name = before["value"]["entrypoint_name"]
        cubin = b"\x7fELFsm_90a|" + ptx[::-1] + b"|\xff\x80" + name.encode() + b"\0"
        assert now["value"]["ptx"] == signed(cubin)
        assert min(now["value"]["ptx"]) < 0  # bytes past 127 as the signed chars of c_char
        assert now["value"]["entrypoint_name"] == name
        assert now["value"]["shared_mem_bytes"] == 1024
    assert (chunk.parent / "toc.json.log").read_text() == "table of contents, left as it is\n"
    assert not list(chunk.parent.glob("*.tmp"))
    listed = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cache"), "--list-ptx"],
                            capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.split() == ["conv_direct"], listed
    assert read_cache(chunk) == after  # listing changes nothing

    # Again, with an assembler that takes everything: only the PTX left is assembled.
    (tmp_path / "ok").mkdir()
    ptxas = fake_ptxas(tmp_path / "ok")
    ptxas.write_text(FAKE_PTXAS.replace('b"bad" in ptx or ', ""))
    r = run(tmp_path / "cache", ptxas)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kernels, 1 assembled for sm_90a, 2 were cubins, 0 kept as PTX" in r.stdout
    again = read_cache(chunk)
    assert again[0] == after[0] and again[2] == after[2]
    assert bytes(v & 0xFF for v in again[1]["value"]["ptx"]).startswith(b"\x7fELF")


def test_a_record_cut_short_is_left_out_and_the_rest_assembled(tmp_path):
    whole = cbor2.dumps(record(9, "reduce", "ret;"))
    chunk = write_cache(tmp_path / "cache", [record(5, "cast", "ret;")], tail=whole[:40])
    r = run(tmp_path / "cache", fake_ptxas(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cut short; left out" in r.stdout
    assert "1 kernels, 1 assembled" in r.stdout
    (only,) = read_cache(chunk)
    assert only["key"] == 5 and bytes(v & 0xFF for v in only["value"]["ptx"]).startswith(b"\x7fELF")


def test_a_folder_without_a_ptx_cache_is_an_error(tmp_path):
    (tmp_path / "autotune").mkdir()
    (tmp_path / "autotune" / "x.cbor").write_bytes(b"")
    r = run(tmp_path, fake_ptxas(tmp_path))
    assert r.returncode != 0 and "no PTX cache" in r.stderr
