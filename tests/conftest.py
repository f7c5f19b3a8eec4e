"""Shared test settings: one torch thread (the CI machine has 2 cores; more threads fight)."""

import pytest
import torch

torch.set_num_threads(1)  # covers module- and session-scoped fixtures too


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
