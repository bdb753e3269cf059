#!/usr/bin/env python3
"""The crates that only run inside the compiler (proc macros, build scripts and what they
use), written into Cargo.toml as `[profile.dev.package.<name>] opt-level = 0`.

Why: `[profile.dev.package."*"] opt-level = 3` makes the tests' numeric dependencies fast, but
it also outranks `[profile.dev.build-override]`, so every proc macro was compiled at opt-level 3
too (syn, serde_derive, cubecl-macros …). Named packages outrank "*". Measured on a 2-core
machine, cold: `cargo check -p birads --features cuda` 333 s → 147 s, and the macros' own run
time rose by under a second per crate. A crate that also runs in a program or a test (serde,
memchr …) keeps opt-level 3.

Host-only means: in `cargo tree -e all` of the workspace but not in its tree of normal and dev
dependencies without proc macros, both with `--all-features` (which can only make the list
shorter), for this machine's platform (elsewhere a host crate missing from the list is only
compiled at opt-level 3, as before).

    python3 scripts/host_crates.py           # print the block
    python3 scripts/host_crates.py --write   # replace the block in Cargo.toml
    python3 scripts/host_crates.py --check   # exit 1 when Cargo.toml's block is stale (CI)
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "# --- host-only crates at opt-level 0 (scripts/host_crates.py --write) ---\n"
END = "# --- end of host-only crates ---\n"


def packages(*edges):
    out = subprocess.run(
        ["cargo", "tree", "--workspace", "--all-features", "--locked", "--prefix", "none",
         "--format", "{p}", "--edges", ",".join(edges)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def host_only():
    return sorted(packages("all") - packages("normal", "dev", "no-proc-macro"))


def block(names):
    lines = [BEGIN]
    for name in names:
        key = name if name.replace("_", "").isalnum() else f'"{name}"'
        lines.append(f"[profile.dev.package.{key}]\nopt-level = 0\n")
    lines.append(END)
    return "".join(lines)


def main():
    wanted = block(host_only())
    if len(sys.argv) == 1:
        sys.stdout.write(wanted)
        return 0
    cargo_toml = ROOT / "Cargo.toml"
    text = cargo_toml.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        print(f"{cargo_toml}: no block between {BEGIN.strip()!r} and {END.strip()!r}",
              file=sys.stderr)
        return 1
    current = text[start:end + len(END)]
    if sys.argv[1] == "--check":
        if current != wanted:
            print("Cargo.toml's host-only crates are stale: run "
                  "`python3 scripts/host_crates.py --write`", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1] == "--write":
        cargo_toml.write_text(text[:start] + wanted + text[end + len(END):])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
