"""The release files agree with each other: pins with pyproject.toml, CI with the README and the
pre-commit hooks, the version with the changelog and the citation.

Each of these drifts silently when one file is edited and its partner is not (a dependency raised
without refreshing the pins, a new test file list, a release without its changelog entry); .ci/run
would find some of it only in CI, and some never.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import tmd_nb

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CI_RUN = (ROOT / ".ci" / "run").read_text()


def _requirements(*groups: str) -> list[Requirement]:
    lists = [PROJECT["dependencies"] if g == "dependencies" else PROJECT["optional-dependencies"][g] for g in groups]
    found = [Requirement(r) for rs in lists for r in rs]
    return [r for r in found if canonicalize_name(r.name) != "tmd-nb"]


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, _, version = line.partition("==")
            assert version, f".ci/{name}: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(package)] = Version(version)
    return pins


def _lowest(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{requirement} declares no single minimum (>=)"
    return bounds[0]


@pytest.mark.parametrize("group", ["dependencies", *PROJECT["optional-dependencies"]])
def test_constraints_pin_every_declared_requirement_within_its_range(group):
    pins = _pins("constraints.txt")
    for requirement in _requirements(group):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} ({group}) has no pin in .ci/constraints.txt: run .ci/refresh-constraints"
        assert pins[name] in requirement.specifier, f".ci/constraints.txt pins {name} {pins[name]}, not {requirement}"


def test_minimum_constraints_are_the_declared_minimums():
    pins = _pins("constraints-min.txt")
    tools = [r for r in _requirements("test") if canonicalize_name(r.name) in {"pytest", "hypothesis"}]
    for requirement in [*_requirements("dependencies", "dask"), *tools]:
        name = canonicalize_name(requirement.name)
        assert pins.get(name) == _lowest(requirement), (
            f".ci/constraints-min.txt pins {name} {pins.get(name)}, but pyproject.toml's minimum is "
            f"{_lowest(requirement)}: run .ci/refresh-constraints"
        )


def test_every_dependency_has_a_minimum_and_libdeflate_a_ceiling():
    for requirement in _requirements("dependencies"):
        _lowest(requirement)
    (deflate,) = [r for r in _requirements("dependencies") if r.name == "deflate"]
    # tmd_nb calls the library inside the package's extension (tmd_nb/formats/deflate.py)
    assert any(s.operator == "<" for s in deflate.specifier), f"{deflate} has no upper bound"


def test_test_lists_of_ci_name_existing_files():
    core = [line for line in (ROOT / ".ci" / "core-tests.txt").read_text().splitlines() if line and line[0] != "#"]
    (sdist,) = re.findall(r"^SDIST_TESTS=\((.*)\)$", CI_RUN, re.MULTILINE)
    for path in [*core, *sdist.split()]:
        assert (ROOT / path).is_file(), f".ci names {path}, which does not exist"
    assert len(core) >= 10


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Run the whole test suite[^\n]*\n+```bash\n(.+?)\n```", readme, re.DOTALL)
    assert block, "README.md has no test command after 'Run the whole test suite'"
    ci_lines = {line.strip().rstrip("\\").strip() for line in CI_RUN.splitlines()}
    for step in block.group(1).split(" && "):
        assert step.strip() in ci_lines, f"the README's test command runs {step!r}, .ci/run does not"
    assert "-c .ci/constraints.txt" in block.group(1)


def test_pre_commit_hooks_run_what_ci_runs():
    hooks = re.findall(r"^\s+entry: (.+)$", (ROOT / ".pre-commit-config.yaml").read_text(), re.MULTILINE)
    ci_lines = {line.strip() for line in CI_RUN.splitlines()}
    assert len(hooks) == 3
    for entry in hooks:
        assert entry in ci_lines, f"pre-commit runs {entry!r}, .ci/run does not"


def test_version_is_in_the_changelog_and_the_citation():
    version = tmd_nb.__version__
    assert re.search(rf"^## {re.escape(version)} - \d{{4}}-\d\d-\d\d$", (ROOT / "CHANGELOG.md").read_text(), re.M), (
        f"CHANGELOG.md has no '## {version} - <date>' section"
    )
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r'^cff-version: "?1\.2\.0"?$', citation, re.M)
    assert re.search(rf'^version: "?{re.escape(version)}"?$', citation, re.M), "CITATION.cff names another version"


def test_metadata_is_spdx_and_names_the_project():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"]), "SPDX licence and classifier both"
    assert PROJECT["authors"] and {"Homepage", "Documentation", "Repository", "Issues"} <= set(PROJECT["urls"])
    (setuptools,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert Version("76.9") not in setuptools.specifier, "the SPDX licence expression needs setuptools >= 77"
    python = {f"Programming Language :: Python :: 3.{minor}" for minor in range(11, 14)}
    assert python <= set(PROJECT["classifiers"]) and PROJECT["requires-python"] == ">=3.11"
