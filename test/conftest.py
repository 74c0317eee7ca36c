"""Shared helpers of the acceptance suite, run against the installed fork (scripts/fork.sh)."""
from __future__ import annotations

import inspect
import pathlib
import sys

import pytest
import torch
from packaging import version

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_2_6 = version.parse(torch.__version__.split("+")[0]) >= version.parse("2.6")
sys.path.insert(0, str(ROOT / "scripts"))

from rb_compile_cases import GraphCounter, make_batch  # noqa: E402, F401


def pytest_configure(config):
    from torchrl.data import ReplayBuffer

    if "compile" not in inspect.signature(ReplayBuffer.__init__).parameters:
        pytest.exit(
            "the torchrl found is not the patched fork (ReplayBuffer has no `compile` "
            "argument): run scripts/fork.sh and test with .venv/bin/python",
            returncode=1,
        )


def skip_untraceable_memmap(storage_type):
    if storage_type.__name__ == "LazyMemmapStorage" and not TORCH_2_6:
        pytest.skip("torch<2.6 does not trace MemoryMappedTensor.__setitem__")


def leaves(data):
    return torch.utils._pytree.tree_flatten(data)[0]


def assert_same_buffer(rb, rb_eager, write_count=True):
    """Length, writer state and every stored value equal.

    ``write_count=False`` leaves out the write count, which torchrl's checkpoints do not keep.
    """
    assert len(rb) == len(rb_eager)
    assert rb._writer._cursor == rb_eager._writer._cursor
    if write_count:
        assert rb.write_count == rb_eager.write_count
    got, expected = leaves(rb[:]), leaves(rb_eager[:])
    assert len(got) == len(expected)
    for x, y in zip(got, expected):
        assert x.dtype == y.dtype and (x == y).all()


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # every test counts its own graphs
    torch._dynamo.reset()
    yield
