"""mybinder.org must be able to build the notebooks' environment from ``binder/`` alone.

Binder runs repo2docker on a clone of the repository. With a ``binder/`` folder, repo2docker
reads only that folder: ``runtime.txt`` picks the Python version of its conda base environment
(which brings JupyterLab, ipykernel and ipywidgets), and ``requirements.txt`` is installed with
``pip install -r "binder/requirements.txt"`` run from the repository root, *after* the whole
repository has been copied in (because the file names a local path, ``.``, which therefore
means the repository itself).

These tests check, without Docker, that

* the ``repo2docker --no-build`` command line accepts a clone-like copy of the repository, and
  the Dockerfile it renders installs ``binder/requirements.txt`` from the repository root, with
  the Python buildpack on Python 3.11;
* a fresh virtual environment built as that Dockerfile would (repo2docker's base packages, then
  ``pip install -r binder/requirements.txt`` from the root) installs tmd_nb, has everything the
  notebooks import, and runs the notebooks in a kernel of that environment;
* the README's Binder badge opens the quick-start notebook in JupyterLab.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell
from notebook_helpers import ALL, CHECKS, check_expected_errors, copy_notebooks, notebook_path, run_notebook

ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT = 900  # seconds; a cold pip cache has to fetch numpy, matplotlib, ipykernel...
# What repo2docker's conda base environment provides to the kernel besides Python
# (repo2docker/buildpacks/conda/environment.yml): the kernel and the widgets.
BASE_ENV = ("ipykernel", "ipywidgets>=8,<9")
# Never part of a clone: build products and local environments.
NOT_IN_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ipynb_checkpoints",
    "test-artifacts",
)


def clone_like_copy(dest: Path) -> Path:
    """Copy what a clone of the repository holds to ``dest`` (committed and not-ignored files)."""
    git = shutil.which("git")
    listing = None
    if git and (ROOT / ".git").exists():
        found = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
        )
        listing = found.stdout.decode() if found.returncode == 0 else None
    if listing is None:  # no git (e.g. an unpacked source archive): copy all but build products
        shutil.copytree(ROOT, dest, ignore=NOT_IN_CLONE, dirs_exist_ok=True)
        return dest
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the working tree: not in the next commit either
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_like_copy(tmp_path_factory.mktemp("clone"))


def requirement_lines() -> list[str]:
    text = (ROOT / "binder" / "requirements.txt").read_text()
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def runtime_version() -> str:
    match = re.fullmatch(r"python-(\d+\.\d+)\s*", (ROOT / "binder" / "runtime.txt").read_text())
    assert match, "binder/runtime.txt must read python-X.Y"
    return match.group(1)


# --------------------------------------------------------------------------- the files


def test_binder_folder_specifies_python_and_installs_the_repository() -> None:
    from packaging.specifiers import SpecifierSet

    binder = sorted(p.name for p in (ROOT / "binder").iterdir())
    assert binder == ["requirements.txt", "runtime.txt"], binder
    assert "." in requirement_lines(), "binder/requirements.txt must install the repository itself ('.')"
    # repo2docker does not compare runtime.txt with requires-python when binder/ exists: we do.
    requires = re.search(r'^requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert runtime_version() in SpecifierSet(requires), (runtime_version(), requires)
    assert runtime_version() == "3.11"


def test_readme_badge_opens_the_quick_start_in_jupyterlab() -> None:
    readme = (ROOT / "README.md").read_text()
    badge = re.search(
        r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]"
        r"\((https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/HEAD\?urlpath=lab/tree/([^)\s]+))\)",
        readme,
    )
    assert badge, "README.md has no Binder badge linking to a notebook in JupyterLab (urlpath=lab/tree/...)"
    assert badge.group(2) == "notebooks/01_quickstart.ipynb", badge.group(1)
    assert (ROOT / badge.group(2)).is_file()


def test_repo2docker_command_line_accepts_the_repository(repo: Path) -> None:
    """``repo2docker --no-build`` needs no Docker: it picks a buildpack and prints the Dockerfile."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "repo2docker",
            "--no-build",
            "--no-run",
            "--user-id",
            "1000",
            "--user-name",
            "jovyan",
            str(repo),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Building conda environment for python=3.11" in result.stderr, result.stderr
    dockerfile = result.stdout
    lines = [line.strip() for line in dockerfile.splitlines()]
    install = 'RUN ${KERNEL_PYTHON_PREFIX}/bin/pip install --no-cache-dir -r "binder/requirements.txt"'
    assert lines.count(install) == 1, dockerfile
    # "." must mean the repository: pip runs in ${REPO_DIR}, after the whole repository is copied there.
    copy_all = "COPY --chown=1000:1000 src/ ${REPO_DIR}/"
    assert copy_all in lines and lines.index(copy_all) < lines.index(install), dockerfile
    workdirs = [i for i, line in enumerate(lines) if line.startswith("WORKDIR ")]
    assert workdirs and lines[max(i for i in workdirs if i < lines.index(install))] == "WORKDIR ${REPO_DIR}"


@pytest.mark.filterwarnings("ignore:pythonjsonlogger.jsonlogger has been moved:DeprecationWarning")
def test_repo2docker_picks_the_python_buildpack(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repo2docker.app import Repo2Docker
    from repo2docker.buildpacks import PythonBuildPack

    app = Repo2Docker()
    monkeypatch.chdir(repo)  # buildpacks look at the current directory, as repo2docker's build() arranges
    picked = next((bp for bp in (cls(base_image=app.base_image) for cls in app.buildpacks) if bp.detect()), None)
    assert type(picked) is PythonBuildPack, type(picked)
    assert picked.binder_dir == "binder"
    assert picked.python_version == "3.11"
    scripts = [script for _user, script in picked.get_assemble_scripts()]
    assert any('pip install --no-cache-dir -r "binder/requirements.txt"' in s for s in scripts), scripts
    assert not any("pip install" in s for _user, s in picked.get_preassemble_scripts()), (
        "requirements installed before the repository is copied: '.' would not be there"
    )


# --------------------------------------------------------------------------- the environment


def notebook_imports(stem: str) -> set[str]:
    """Top-level modules the code cells of a notebook import (IPython magics translated first)."""
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    modules: set[str] = set()
    for cell in nbformat.read(notebook_path(stem), as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(transform(cell.source))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def pip_install(python: Path, *args: str, cwd: Path) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    assert result.returncode == 0, f"pip install {' '.join(args)} (in {cwd}) failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_fresh_binder_environment_runs_the_notebooks(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip_install(python, *BASE_ENV, cwd=tmp_path)
    pip_install(python, "-r", "binder/requirements.txt", cwd=repo)  # repo2docker's assemble step, from the root

    # tmd_nb comes from the environment, not from the checkout next to it.
    where = subprocess.run(
        [str(python), "-c", "import tmd_nb; print(tmd_nb.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    # Everything any notebook imports is there (the panel notebook included).
    modules = sorted(set().union(*(notebook_imports(stem) for stem in ALL)))
    assert "tmd_nb" in modules
    probe = subprocess.run(
        [str(python), "-c", "; ".join(f"import {m}" for m in modules)], cwd=tmp_path, capture_output=True, text=True
    )
    assert probe.returncode == 0, f"the Binder environment lacks a module the notebooks import:\n{probe.stderr}"

    # A kernel of that environment runs the notebooks.
    kernels = tmp_path / "kernels"
    subprocess.run(
        [str(python), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", "binder-env"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernels / "share" / "jupyter" / "kernels")])
    assert Path(specs.get_kernel_spec("binder-env").argv[0]).is_relative_to(venv)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    # 08_instrument_files reads SurfaceTopography's sample files: here from beside the repository.
    monkeypatch.setenv("TMD_NB_INSTRUMENT_SAMPLES", str(ROOT.parent / "shared" / "data" / "instruments"))
    folder = copy_notebooks(tmp_path)
    for stem in ALL:
        path = folder / f"{stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(new_code_cell("import sys, tmd_nb\nprint('kernel:', sys.executable, tmd_nb.__file__)"))
        nbformat.write(nb, path)
        km = AsyncKernelManager(kernel_name="binder-env", kernel_spec_manager=specs)
        done, errors = run_notebook(path, km=km)
        check_expected_errors(done, errors, stem)
        check = CHECKS.get(stem)
        if check is not None:
            check(done, errors)
        last = "".join(o.get("text", "") for o in done.cells[-1].outputs)
        assert last.startswith("kernel: ") and all(Path(p).is_relative_to(venv) for p in last.split()[1:]), last
