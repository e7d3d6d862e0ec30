"""Load one instrument's file under a capped address space, as ``memory_probe.py`` does.

Run as ``python instrument_probe.py PATH BUDGET_BYTES SIZE_FACTOR [RETURNED_BYTES]``. The warm-up
loads a small instrument file first, so that SurfaceTopography (whose import maps hundreds of MB of
libraries) is in place before the address space is measured and capped; the cap then bounds what
reading PATH itself takes.
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


def main() -> None:
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
    result: dict[str, object]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = tmd_nb.load(path)
        result = {"outcome": "ok", "shape": list(data["height_map"].shape)}
    except tmd_nb.FormatError as exc:
        result = {"outcome": "FormatError", "message": str(exc), "context": exc.__context__ is not None}
    except BaseException as exc:
        result = {"outcome": type(exc).__name__, "message": str(exc)[:500]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
