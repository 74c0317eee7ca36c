"""Batches and a graph-counting backend shared by the compile report and the acceptance suite."""
from __future__ import annotations

import torch
from tensordict import TensorDict


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
    """A batch whose values tell which call wrote it; tensordicts and pytrees mix dtypes.

    ``datatype`` is ``"tensor"``, ``"tensordict"`` or ``"pytree"`` (nested dicts).
    """
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
    if datatype == "tensordict":
        return TensorDict(data, [size])
    raise ValueError(f"unknown datatype {datatype!r}: tensor, tensordict or pytree")
