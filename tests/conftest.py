"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: a second intra-op thread gains nothing there, and on a shared, busy
    2-core machine its spin-waiting made each step 10-20x slower (measured at load 5)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
