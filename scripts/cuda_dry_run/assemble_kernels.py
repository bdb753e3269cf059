#!/usr/bin/env python3
"""Assemble cubecl-cuda's kernel cache for one GPU architecture ahead of time.

cubecl-cuda keeps every kernel NVRTC compiled in an on-disk cache (cubecl.toml's
`[compilation] cache`): `cuda/<version>/ptx/chunk*.cbor`, one CBOR record per kernel, its key
the kernel's stable hash and its value {entrypoint_name, shared_mem_bytes, ptx}, the PTX as an
array of bytes. A process that finds a kernel there skips NVRTC and hands the bytes to the
driver's cuModuleLoadData, which takes PTX or a cubin alike; from PTX the driver still assembles
the machine code itself, each time a process loads the module.

This script replaces each PTX in such a cache with the cubin ptxas makes of it for ARCH, so a
GPU machine given the cache neither compiles nor assembles: scripts/cuda_dry_run.sh fills the
cache without a GPU (on the stand-in driver, with NVIDIA's NVRTC), and scripts/gpu_check.sh
starts from it on the device, where compiling cost most of the first call's minutes. Keys and
the table of contents are left as they are. A kernel ptxas refuses keeps its PTX and is named;
the exit status is then 1. Running it again on an assembled cache changes nothing.

    python3 assemble_kernels.py CACHE_DIR --ptxas PATH/ptxas [--arch sm_90a] [--jobs N]

Needs the cbor2 package (the records are CBOR, written by ciborium).
"""
import argparse
import array
import concurrent.futures
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cbor2

ELF = b"\x7fELF"


def chunks(cache):
    """The chunk files of cubecl-cuda's PTX cache under CACHE."""
    return sorted(p for p in Path(cache).rglob("*.cbor") if "ptx" in p.relative_to(cache).parts)


def read_records(path):
    """The chunk's records one by one; a last one cut short (a process killed while writing
    it) is left out, as cubecl itself stops reading there: that kernel is compiled again where
    needed. (A chunk holds a few hundred MB of PTX: it is not decoded all at once.)"""
    size = path.stat().st_size
    with open(path, "rb") as f:
        while f.tell() < size:
            at = f.tell()
            try:
                yield cbor2.load(f)
            except cbor2.CBORDecodeEOF:
                print(f"{path}: the record at byte {at} is cut short; left out")
                return


def to_bytes(values):
    """The PTX or cubin of a record: ciborium writes a Vec<c_char> as an array of small ints."""
    return array.array("b", values).tobytes()


def to_values(data):
    """Bytes as the signed chars of a Vec<c_char> (what ciborium reads back)."""
    return array.array("b", data).tolist()


def assemble(index, ptx, name, ptxas, arch, folder):
    """The cubin of PTX for ARCH, or (None, why); INDEX names its files (names repeat)."""
    src = Path(folder) / f"{index}.ptx"
    out = src.with_suffix(".cubin")
    src.write_bytes(ptx.rstrip(b"\0"))
    # NVRTC ran with -lineinfo: without --suppress-debug-info ptxas would also put the whole
    # PTX and its line tables into the cubin, twice its size.
    r = subprocess.run([ptxas, f"-arch={arch}", "--suppress-debug-info", "-o", str(out),
                        str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["ptxas failed"])[0]
    cubin = out.read_bytes()
    if not cubin.startswith(ELF) or name.encode() + b"\0" not in cubin:
        return None, "ptxas wrote no cubin with the entry point"
    return cubin, None


def batches(records, size):
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def convert(path, ptxas, arch, jobs):
    """Rewrites one chunk (atomically: into a new file, renamed over it at the end), a batch of
    records at a time; returns (kernels, assembled, already cubins, failed)."""
    n = done = already = 0
    failed = []
    tmp = path.with_name(path.name + ".tmp")
    with tempfile.TemporaryDirectory() as folder, open(tmp, "wb") as out, \
            concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for batch in batches(read_records(path), 8 * jobs):
            codes = [to_bytes(r["value"]["ptx"]) for r in batch]
            todo = [i for i, code in enumerate(codes) if not code.startswith(ELF)]
            results = pool.map(lambda i: assemble(n + i, codes[i],
                                                  batch[i]["value"]["entrypoint_name"], ptxas,
                                                  arch, folder), todo)
            for i, (cubin, why) in zip(todo, results):
                if cubin is None:
                    failed.append(f"{batch[i]['value']['entrypoint_name']}: {why}")
                else:
                    batch[i]["value"]["ptx"] = to_values(cubin)
                    done += 1
            for record in batch:
                cbor2.dump(record, out)
            n += len(batch)
            already += len(batch) - len(todo)
    os.replace(tmp, path)
    return n, done, already, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", help="the folder cubecl.toml's [compilation] cache names")
    ap.add_argument("--ptxas", help="required unless --list-ptx")
    ap.add_argument("--list-ptx", action="store_true",
                    help="only name the kernels still in PTX (one line each), change nothing")
    ap.add_argument("--arch", default="sm_90a", help="as cubecl-cuda compiles for the device")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    args = ap.parse_args()
    found = chunks(args.cache)
    if not found:
        sys.exit(f"no PTX cache (cuda/*/ptx/*.cbor) under {args.cache}")
    if args.list_ptx:
        for path in found:
            for record in read_records(path):
                if not to_bytes(record["value"]["ptx"][:4]).startswith(ELF):
                    print(record["value"]["entrypoint_name"])
        return
    if not args.ptxas:
        ap.error("--ptxas is required")
    bad = 0
    for path in found:
        size = path.stat().st_size
        n, done, already, failed = convert(path, args.ptxas, args.arch, args.jobs)
        print(f"{path}: {n} kernels, {done} assembled for {args.arch}, {already} were cubins, "
              f"{len(failed)} kept as PTX; {size / 1e6:.1f} -> {path.stat().st_size / 1e6:.1f} MB")
        for line in failed:
            print(f"  kept as PTX: {line}")
        bad += len(failed)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
