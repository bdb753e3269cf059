"""Candidates that cubecl's autotune tried and lost to an error, from its cache folder.

Autotune keeps, for each kernel family, a `*.json.log` of records (one JSON value per line): the
key tuned and every candidate's outcome. `Skip` is a candidate that does not apply to the key;
any other error is a candidate that failed to compile or to launch, which autotune leaves out
without a word. Prints one line per distinct failure (family, candidate, first error line, how
many keys; "failed to compile" where NVRTC refused it), then the first compilation error in
full. `InvalidSamples` means every trial of the candidate returned an error, which cubecl logs
only at trace level: on the stand-in driver, a tensor map it refused (as a device would).

usage: python3 autotune_failures.py AUTOTUNE_CACHE_FOLDER
"""

import json
import pathlib
import sys
from collections import Counter


def failures(folder):
    """(family, candidate, error text) for every failed trial under `folder`."""
    for log in sorted(pathlib.Path(folder).rglob("*.json.log")):
        family = log.name.removesuffix(".json.log")
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            for result in json.loads(line).get("value", {}).get("results", []):
                error = result.get("outcome", {}).get("Err")
                if not error or "Skip" in error:
                    continue
                kind, detail = next(iter(error.items()))
                name = detail.get("name", "?") if isinstance(detail, dict) else "?"
                text = detail.get("err", kind) if isinstance(detail, dict) else str(detail)
                yield family, name, text


def reason(text):
    """The line of an error that says most: the compiler's own, else the last cause (the line
    after the last "Caused by:"; the kernel's source and the backtrace after it left out)."""
    text = text.split("[Source]")[0].split("\nBacktrace")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "catastrophic error" in line or ": error" in line or "error:" in line:
            return line
    after = [i + 1 for i, line in enumerate(lines) if line.startswith("Caused by")]
    if after and after[-1] < len(lines):
        return lines[after[-1]]
    return lines[-1] if lines else text[:200]


def main():
    folder = sys.argv[1]
    if not pathlib.Path(folder).exists():
        return
    seen = Counter()
    first = {}
    for family, name, text in failures(folder):
        key = (family, name, reason(text))
        seen[key] += 1
        first.setdefault(key, text)
    for (family, name, why), count in sorted(seen.items()):
        how = "failed to compile" if "Compilation Error" in first[(family, name, why)] else "failed"
        print(f"autotune candidate {how}: {family} {name} ({count} keys): {why}")
    for key, text in first.items():
        if "Compilation Error" in text:
            print(f"-- the first compilation error in full ({key[1]}):")
            print("\n".join(text.splitlines()[:12]))
            break


if __name__ == "__main__":
    main()
