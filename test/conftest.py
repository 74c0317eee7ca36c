"""Shared helpers of the acceptance suite, run against the installed fork (scripts/fork.sh)."""
from __future__ import annotations

import inspect
import pathlib

import pytest
import torch
from tensordict import TensorDict

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    from torchrl.data import ReplayBuffer

    if "compile" not in inspect.signature(ReplayBuffer.__init__).parameters:
        pytest.exit(
            "the torchrl found is not the patched fork (ReplayBuffer has no `compile` "
            "argument): run scripts/fork.sh and test with .venv/bin/python",
            returncode=1,
        )


class GraphCounter:
    """A torch.compile backend that counts the graphs it compiles and runs them eagerly.

    A graph break or a recompilation shows as one more graph.
    """

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def make_batch(datatype: str, size: int, step: int):
    """A batch whose values tell which call wrote it; TensorDict batches mix dtypes."""
    obs = torch.full((size, 4), float(step)) + torch.arange(size)[:, None]
    if datatype == "tensor":
        return obs
    data = {
        "obs": obs,
        "action": torch.arange(size) % 3,
        "next": {
            "obs": obs + 1,
            "reward": obs[:, :1] / 10,
            "done": torch.arange(size)[:, None] % 7 == 0,
            "pixels": torch.full((size, 2, 2), step % 256, dtype=torch.uint8),
        },
    }
    if datatype == "pytree":
        return data
    return TensorDict(data, [size])


def leaves(data):
    return torch.utils._pytree.tree_flatten(data)[0]


def assert_same_buffer(rb, rb_eager):
    """Length, writer state and every stored value equal."""
    assert len(rb) == len(rb_eager)
    assert rb._writer._cursor == rb_eager._writer._cursor
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
