"""conftest's thread pin: every test and every fixture trains with PINNED_THREADS torch and
BLAS threads, whatever an earlier test left (the thread count changes float reduction order,
so a test's numbers must not depend on which tests ran before it)."""

from __future__ import annotations

import pytest
import torch
from conftest import PINNED_THREADS
from threadpoolctl import threadpool_info


def _blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


@pytest.fixture(scope="module")
def counts_in_a_module_fixture():
    return torch.get_num_threads(), _blas_threads()


def test_a_test_that_changes_the_thread_count_and_does_not_restore_it():
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(PINNED_THREADS + 1)
    threadpool_limits(limits=PINNED_THREADS + 1)  # not as a context: left changed on purpose
    assert torch.get_num_threads() == PINNED_THREADS + 1


def test_the_next_test_and_its_module_fixture_run_pinned(counts_in_a_module_fixture):
    assert torch.get_num_threads() == PINNED_THREADS
    assert _blas_threads() <= {PINNED_THREADS}
    torch_threads, blas_threads = counts_in_a_module_fixture
    assert torch_threads == PINNED_THREADS and blas_threads <= {PINNED_THREADS}
