"""Smoke test of an installed tmd_nb (.ci/run's package job runs it in a venv holding only the wheel).

Run from outside the repository: the import must come from the installed distribution, with its
metadata, its command line and a lossless save/load round trip through every format it writes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib.metadata import metadata, version
from pathlib import Path

import numpy as np

import tmd_nb

where = Path(tmd_nb.__file__).resolve()
assert "site-packages" in where.parts, f"tmd_nb imported from {where}, not from the installed wheel"
assert version("tmd_nb") == tmd_nb.__version__, (version("tmd_nb"), tmd_nb.__version__)
meta = metadata("tmd_nb")
assert meta["License-Expression"] == "MIT", meta["License-Expression"]
assert (where.parent / "py.typed").is_file(), "py.typed is missing from the wheel"

heights = np.random.default_rng(0).normal(size=(30, 40)).astype(np.float32)
scan = {"height_map": heights, "units": "mm", "x_length": 0.4, "y_length": 0.3}
with tempfile.TemporaryDirectory() as folder:
    path = tmd_nb.export_to_npz(scan, Path(folder) / "scan.npz")
    back = tmd_nb.load_from_npz(path)
    assert back["height_map"].dtype == heights.dtype and np.array_equal(back["height_map"], heights)
    assert back["units"] == "mm" and back["x_length"] == 0.4, back
    for suffix in (".npy", ".tmd", ".x3p", ".gwy"):
        target = Path(folder) / f"scan{suffix}"
        tmd_nb.save(heights if suffix == ".npy" else {"height_map": heights, "x_length": 0.4, "y_length": 0.3}, target)
        again = tmd_nb.load(target)
        loaded = again if isinstance(again, np.ndarray) else again["height_map"]
        assert np.array_equal(loaded, heights), suffix
    # The command line, as installed (the console script is checked by .ci/run).
    done = subprocess.run([sys.executable, "-m", "tmd_nb", "--help"], capture_output=True, text=True, check=True)
    assert "usage" in done.stdout.lower(), done.stdout

# The IPython extension loads and registers its magics.
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "tmd_nb")
assert {"tmd_export", "tmd_load", "tmd_convert", "tmd_panel"} <= set(shell.magics_manager.magics["line"])
print(f"smoke test passed: tmd_nb {tmd_nb.__version__} from {where.parent}")
