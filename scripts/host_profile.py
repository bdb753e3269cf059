#!/usr/bin/env python3
"""CPU time per training step by thread and kind of work, from a `perf report` of
`examples/host_time.rs` (run by `bash scripts/cubecl_check.sh --host`).

    perf record -e cpu-clock -c 250000 ...   # one sample per 0.25 ms of CPU time
    perf report -i perf.data -n --sort pid,dso,sym -F sample,pid,dso,sym --stdio \\
        | python3 scripts/host_profile.py --sample-ms 0.25 --steps 4

Threads: the calling thread (burn's autodiff; named after the program), `DSU-*` (burn-fusion's
device thread: recording, matching and planning operations) and `DSD-*` (cubecl's server:
memory pool, kernel arguments, launches). The software driver's threads inherit the server's
name; they are the `DSD-*` threads that run none of cubecl's code. Kinds of work:
  burn, cubecl   symbols of burn's and cubecl's crates (not cubecl-wgpu)
  allocation     the allocator, hash maps, vectors and copies they call (on the server's
                 thread partly the driver's)
  waiting        cubecl's channels spinning or yielding until the other thread answers, and
                 the scheduler: not work, and on a machine with more cores than threads it
                 costs nothing
  wgpu, driver   wgpu, naga, cubecl-wgpu and Mesa's driver (on CUDA: cubecl-cuda and CUDA's)
  other          the rest
"""
import argparse
import collections
import re
import sys

WAIT = ("submit_inner", "submit_blocking", "custom_channel::Server", "begin_short_backtrace",
        "sched_yield", "finish_task_switch", "__schedule", "clock_nanosleep", "futex",
        "yield_now", "exit_to_user_mode", "irqentry_exit", "do_syscall_64", "syscall_exit")
DRIVER_DSOS = ("libvulkan_lvp", "libLLVM", "[JIT]", "libdrm", "libvulkan")
WGPU = ("wgpu", "wgpu_core", "wgpu_hal", "wgpu_types", "naga", "cubecl_wgpu", "ash",
        "gpu_alloc", "gpu_descriptor")
STD = ("alloc", "core", "std", "hashbrown", "smallvec")
LIBC_ALLOC = ("malloc", "free", "memmove", "memcpy", "memset", "memalign", "realloc",
              "unlink_chunk", "consolidate")


def owner(sym):
    """The crate a Rust symbol's code comes from: its first path segment, looking through
    `<T as Trait>` and drop glue (`core::ptr::drop_in_place<burn_ir::…>` is burn's)."""
    sym = re.sub(r"^core::ptr::drop_in_place<", "", sym)
    m = re.search(r"\b([a-z][a-z0-9_]*)::", sym)
    return m[1] if m else ""


def kind(dso, sym):
    if any(w in sym for w in WAIT):
        return "waiting"
    crate = owner(sym)
    if dso.startswith(DRIVER_DSOS) or crate in WGPU:
        return "wgpu, driver"
    if crate.startswith(("burn_", "cubecl_")):
        return "burn, cubecl"
    if crate in STD or any(a in sym for a in LIBC_ALLOC):
        return "allocation"
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-ms", type=float, required=True, help="CPU time per sample")
    ap.add_argument("--steps", type=int, required=True, help="steps sampled")
    args = ap.parse_args()
    rows = []
    line = re.compile(r"\s*(\d+)\s+(\d+):(\S+)\s+(.+?)\s+\[[.k]\]\s+(.*)")
    for text in sys.stdin:
        m = line.match(text)
        if m:
            rows.append((int(m[1]), int(m[2]), m[3], m[4].strip(), m[5]))
    server = {tid for _, tid, comm, _, sym in rows
              if comm.startswith("DSD") and re.search(r"\bcubecl_runtime::", sym)}

    def thread(tid, comm):
        if comm.startswith("DSU"):
            return "DSU (fusion)"
        if comm.startswith("DSD"):
            return "DSD (server)" if tid in server else "driver threads"
        return "driver threads" if comm.startswith("llvmpipe") else "caller"

    table = collections.Counter()
    for samples, tid, comm, dso, sym in rows:
        table[(thread(tid, comm), kind(dso, sym))] += samples
    kinds = ["burn, cubecl", "allocation", "other", "wgpu, driver", "waiting"]
    threads = ["caller", "DSU (fusion)", "DSD (server)", "driver threads"]
    ms = lambda n: n * args.sample_ms / args.steps
    print(f"{'ms per step':<16}" + "".join(f"{k:>14}" for k in kinds))
    for t in threads:
        print(f"{t:<16}" + "".join(f"{ms(table[(t, k)]):>14.1f}" for k in kinds))
    work = {t: sum(ms(table[(t, k)]) for k in kinds[:3]) for t in threads}
    print("work (burn, cubecl + allocation + other): " +
          ", ".join(f"{t} {w:.1f}" for t, w in work.items() if t != "driver threads"))


if __name__ == "__main__":
    main()
