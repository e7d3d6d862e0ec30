"""Shared test helpers.

Tests that need something a laptop may lack (Chromium, the sample scans in ``../shared``) call
:func:`require`: it skips with the reason, except under ``TMD_NB_STRICT=1`` (set by ``.ci/run``),
where a missing requirement is a failure and any skip fails the session.

Hypothesis profiles: ``quick`` (the default, for local runs) and ``thorough`` (``.ci/run``, or
``HYPOTHESIS_PROFILE=thorough``, or ``CI=true``), with ten times the examples. Property and fuzz
tests take the profile's count: none sets a number of its own (``test_hostile`` checks), and one
that must stay cheaper takes a fraction of it (``settings.default.max_examples // 4``), saying why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

STRICT = os.environ.get("TMD_NB_STRICT") == "1"
ROOT = Path(__file__).resolve().parents[1]
# The sample files beside the repository; TMD_NB_SHARED names the folder for tests run elsewhere (an unpacked sdist).
SHARED = Path(os.environ.get("TMD_NB_SHARED") or ROOT.parent / "shared")
SHARED_TMD = SHARED / "data" / "tmd"
SHARED_X3P = SHARED / "data" / "x3p"
SHARED_GWY = SHARED / "data" / "gwy"
# The browser tests drive Debian's chromium (Playwright cannot download its own browsers here).
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

_RELAXED = {
    "deadline": None,  # timing varies on a shared machine; speed is measured by benchmarks/, not here
    # tmp_path is shared by the examples of one test on purpose (each example overwrites its files).
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("quick", max_examples=100, **_RELAXED)
settings.register_profile("thorough", max_examples=1000, **_RELAXED)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("thorough" if os.environ.get("CI") == "true" else "quick")
settings.load_profile(PROFILE)


def require(ok: bool, reason: str) -> None:
    """Skip the calling test with ``reason`` unless ``ok`` (fail instead under TMD_NB_STRICT=1)."""
    if ok:
        return
    if STRICT:
        pytest.fail(f"required in CI (TMD_NB_STRICT=1): {reason}")
    pytest.skip(reason)


@pytest.fixture
def tmd_samples() -> Path:
    """The folder of real TrueMap scans beside the repository."""
    require(
        SHARED_TMD.is_dir() and any(SHARED_TMD.glob("*.tmd")),
        f"sample scans not found at {SHARED_TMD} (they live in shared/data/tmd beside the repository)",
    )
    return SHARED_TMD


@pytest.fixture
def x3p_samples() -> dict[str, Path]:
    """The X3P samples beside the repository (x3ptools' pyramid.x3p and testing.x3p), by stem."""
    found = {p.stem: p for p in SHARED_X3P.glob("*.x3p")}
    require(
        {"pyramid", "testing"} <= set(found),
        f"X3P samples not found at {SHARED_X3P} (they live in shared/data/x3p beside the repository)",
    )
    return found


@pytest.fixture
def gwy_sample() -> Path:
    """gwyfile's test.gwy beside the repository: a 128 x 128 channel titled "Test"."""
    path = SHARED_GWY / "test.gwy"
    require(path.is_file(), f"Gwyddion sample not found at {path} (it lives in shared/data/gwy beside the repository)")
    return path


@pytest.fixture(scope="session")
def shell(tmp_path_factory: pytest.TempPathFactory):
    """The session's InteractiveShell (IPython keeps one), its profile and history kept out of ~."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipythondir")))
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        yield InteractiveShell.instance(config=config)


@pytest.fixture
def ip(shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The shell with the extension loaded, working in tmp_path; user variables removed afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "tmd_nb")
    yield shell
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]
    if "tmd_nb" in shell.extension_manager.loaded:
        shell.run_line_magic("unload_ext", "tmd_nb")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not STRICT:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        if reporter:
            reporter.write_line(f"TMD_NB_STRICT=1: {len(skipped)} test(s) skipped; in CI every test must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
