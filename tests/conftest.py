"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest on one thread (and leave the other cores to others)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_synthetic(monkeypatch):
    """The synthetic dataset at 32 x 32 with 6 training, 2 validation and 3 test images, so that
    a run trains in a second; returns its spec."""
    from fakes import SMALL_SYNTHETIC

    from calibtut.data import catalog

    real = catalog.spec
    small = real("synthetic").replace(**SMALL_SYNTHETIC)
    monkeypatch.setattr(catalog, "spec", lambda name: small if name == "synthetic" else real(name))
    return small
