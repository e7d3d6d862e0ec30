"""Load one file under a capped address space and report what happened, as one JSON line.

Run as ``python memory_probe.py PATH BUDGET_BYTES SIZE_FACTOR``. After the imports (and one
small load, so that every lazily imported module and cache is in place), the child reads its own
address-space size, sets ``RLIMIT_AS`` to that size + BUDGET + SIZE_FACTOR x (size of PATH) + the
bytes of the arrays the load is expected to return (an optional 4th argument), then loads PATH
with :func:`tmd_nb.load`, its CPU time capped too (``RLIMIT_CPU``, far above what any load needs,
against quadratic work). It prints ``{"outcome": "ok" | "FormatError" | "MemoryError" | ...,
"message": ...}``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import warnings

import numpy as np

import tmd_nb

#: CPU seconds a load may take (SIGXCPU ends the process past them).
CPU_SECONDS = 120


def vm(field: str = "VmSize") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset this process's peak resident size (VmHWM) to its current one; return that, in bytes.

    For a child measuring what a save adds: its ``ru_maxrss`` keeps the forking parent's peak.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return vm("VmHWM")


def main() -> None:
    path, budget, factor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    returned = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with tempfile.TemporaryDirectory() as folder:  # warm up: imports, thread pools, zone cache
        warm = os.path.join(folder, "warm.npz")
        tmd_nb.export_to_npz({"height_map": np.zeros((2, 2)), "t": (1, 2)}, warm)
        tmd_nb.load(warm)
    base = vm()
    cap = base + budget + factor * os.path.getsize(path) + returned
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # A guard against work that grows faster than the file (quadratic scans), not a speed test:
    # every load here takes a few seconds at most; the limit is far above that.
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + CPU_SECONDS
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    result: dict[str, object]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = tmd_nb.load(path)
        result = {"outcome": "ok", "keys": sorted(data)[:5]}
    except tmd_nb.FormatError as exc:
        result = {"outcome": "FormatError", "message": str(exc), "context": exc.__context__ is not None}
    except BaseException as exc:
        result = {"outcome": type(exc).__name__, "message": str(exc)[:500]}
    result["peak"] = vm("VmPeak") - base  # address space used beyond the baseline, at most
    print(json.dumps(result))


if __name__ == "__main__":
    main()
