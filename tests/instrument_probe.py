"""Load one instrument's file under a capped address space, as ``memory_probe.py`` does.

Run as ``python instrument_probe.py PATH BUDGET_BYTES SIZE_FACTOR [RETURNED_BYTES]``. The warm-up
loads a small instrument file first, so that SurfaceTopography (whose import maps hundreds of MB of
libraries) is in place before the address space is measured and capped; the cap then bounds what
reading PATH itself takes.

With ``--serve BUDGET_BYTES SIZE_FACTOR LARGEST_FILE_BYTES RETURNED_BYTES`` the child is capped
once, for the largest file it will be given, then loads each path read from its standard input and
answers one JSON line for each (the fuzz tests: one import of SurfaceTopography, not one per file).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from pathlib import Path

from memory_probe import CPU_SECONDS, vm

import tmd_nb

WARM = Path(__file__).resolve().parents[2] / "shared" / "data" / "instruments" / "xyz-2.txt"


def attempt(path: str) -> dict[str, object]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = tmd_nb.load(path)
        return {"outcome": "ok", "shape": list(data["height_map"].shape)}
    except tmd_nb.FormatError as exc:
        return {"outcome": "FormatError", "message": str(exc), "context": exc.__context__ is not None}
    except BaseException as exc:
        return {"outcome": type(exc).__name__, "message": str(exc)[:500]}


def serve() -> None:
    budget, factor, largest, returned = (int(a) for a in sys.argv[2:6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmd_nb.load(WARM)
    cap = vm() + budget + factor * largest + returned
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for line in sys.stdin:
        print(json.dumps(attempt(line.rstrip("\n"))), flush=True)


def main() -> None:
    if sys.argv[1] == "--serve":
        serve()
        return
    path, budget, factor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    returned = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmd_nb.load(WARM)
    base = vm()
    cap = base + budget + factor * os.path.getsize(path) + returned
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + CPU_SECONDS
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    result = attempt(path)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
