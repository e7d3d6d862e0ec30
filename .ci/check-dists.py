"""Check what the built wheel and sdist hold: ``python3 .ci/check-dists.py dist`` (.ci/run's package job).

The sdist must hold every file the repository tracks (so its tests run from the unpacked folder:
conftest.py and the helpers, the notebooks and docs they read, SECURITY.md, CHANGELOG.md,
CITATION.cff); the wheel the package with every module and py.typed, the licence, the command
line, and no tests.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Tracked files the sdist leaves out on purpose (none of them is needed to build, test or read the project).
NOT_IN_SDIST = {".gitignore"}
MUST_HAVE = [
    "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "SECURITY.md", "CHANGELOG.md", "CITATION.cff",
    "tests/conftest.py", "tests/helpers.py", "tests/archive_helpers.py", "tests/hostile_files.py",
    "tests/memory_probe.py", "notebooks/01_quickstart.ipynb", "docs/conf.py", "docs/FORMAT.md",
    ".ci/core-tests.txt", ".ci/constraints.txt", ".ci/constraints-min.txt",
]  # fmt: skip


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return {name for name in out.decode().split("\0") if name and not (ROOT / name).is_symlink()} - NOT_IN_SDIST


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    problems = [f"sdist lacks {name}" for name in MUST_HAVE if name not in names]
    problems += [f"sdist lacks the tracked file {name}" for name in sorted(tracked() - names)]
    if not top.startswith("tmd_nb-"):
        problems.append(f"sdist unpacks into {top!r}, not tmd_nb-<version>")
    return problems


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tmd_nb").rglob("*.py")}
    problems = [f"wheel lacks {name}" for name in sorted((modules | {"tmd_nb/py.typed"}) - names)]
    problems += [f"wheel holds {name}" for name in sorted(names) if name.startswith(("tests/", "docs/", ".ci/"))]
    if f"{info}/licenses/LICENSE" not in names:
        problems.append("wheel lacks the licence file")
    if meta["License-Expression"] != "MIT":
        problems.append(f"wheel metadata License-Expression is {meta['License-Expression']!r}, not 'MIT'")
    if "tmd-nb = tmd_nb.__main__:main" not in entry_points:
        problems.append("wheel does not install the tmd-nb command")
    return problems


def main(folder: str) -> int:
    dist = Path(folder)
    sdists, wheels = sorted(dist.glob("tmd_nb-*.tar.gz")), sorted(dist.glob("tmd_nb-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"expected one sdist and one wheel in {dist}, found {[p.name for p in dist.iterdir()]}")
        return 1
    problems = check_sdist(sdists[0]) + check_wheel(wheels[0])
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{sdists[0].name} and {wheels[0].name} hold what they should")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist"))
