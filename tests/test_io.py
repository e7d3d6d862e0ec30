"""Shared I/O plumbing: write-back during large saves, pipes refused without blocking."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from archive_helpers import same, sample, save_npz
from conftest import require

from tmd_nb import load, load_tmd
from tmd_nb.errors import FormatError
from tmd_nb.storage import _io, deflate
from tmd_nb.storage.archive import read_npz
from tmd_nb.storage.npyfile import read_npy, write_npy


def test_large_saves_write_back_while_writing(tmp_path, monkeypatch):
    """Disk write-back starts during a large save (fdatasync from a helper), and the file is right."""
    monkeypatch.setattr(_io, "WRITE_BEHIND", 1 << 14)
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd):
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    a = sample("<f8", (200, 300))
    for compress in (True, False):
        synced.clear()
        path = save_npz(tmp_path / f"{compress}.npz", {"a": a}, compress=compress, threads=2)
        assert synced and same(np.load(path)["a"], a)
    synced.clear()
    with open(tmp_path / "a.npy", "wb") as fp:
        write_npy(fp, a)
    assert synced and same(np.load(tmp_path / "a.npy"), a)
    synced.clear()
    write_npy(io.BytesIO(), a)  # nothing to sync, nothing breaks
    assert not synced


def test_a_fifo_is_refused_without_blocking(tmp_path):
    require(hasattr(os, "mkfifo"), "no FIFOs on this platform")
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        read_npz(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        read_npy(fifo)
    for reader in (load, load_tmd):  # these sniff or parse the head of the file: same refusal
        with pytest.raises(FormatError, match="not a regular file"):
            reader(fifo)
