"""What .ci/refresh-constraints installs, read from pyproject.toml (so the two never disagree).

python3 .ci/pins.py extras      every extra, comma-separated: ".[extras]" installs the lot
python3 .ci/pins.py minimums    "name==lowest" for each dependency and each test tool below
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The extras the minimum-versions job installs besides tmd_nb's own dependencies (some core tests need Dask).
MIN_EXTRAS = ("dask",)
#: And the test tools, at their lowest too.
TEST_TOOLS = ("pytest", "hypothesis")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def lowest(requirement: str) -> tuple[str, str | None]:
    """The name and the ``>=`` bound of a requirement string (None without one)."""
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"cannot read the requirement {requirement!r} in pyproject.toml")
    name, spec = match.groups()
    bound = re.search(r">=\s*([0-9][^,\s]*)", spec)
    return name, bound.group(1) if bound else None


def main(what: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if what == "extras":
        return ",".join(extras)
    if what == "minimums":
        wanted = list(project["dependencies"]) + [r for extra in MIN_EXTRAS for r in extras[extra]]
        wanted += [r for r in extras.get("test", []) if lowest(r)[0].lower() in TEST_TOOLS]
        pins = []
        for requirement in wanted:
            name, bound = lowest(requirement)
            if bound is None:
                raise ValueError(f"{requirement!r} in pyproject.toml declares no minimum (>=) to test")
            pins.append(f"{name}=={bound}")
        return "\n".join(pins)
    raise SystemExit(f"usage: python3 .ci/pins.py extras|minimums, not {what!r}")


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else ""))
