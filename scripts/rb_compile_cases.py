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
    ``("next", "done")`` ends a trajectory every 7 elements.
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


def make_rollout(datatype: str, envs: int, steps: int, step: int):
    """A batch of ``envs`` x ``steps`` elements, envs first (as a collector of ``envs``
    environments gives it), for a storage with ``ndim=2`` that a buffer extends
    along its dim 1 (the default ``dim_extend``)."""
    batch = make_batch(datatype, envs * steps, step)
    if datatype == "tensordict":
        return batch.reshape(envs, steps)
    return torch.utils._pytree.tree_map(
        lambda leaf: leaf.reshape(envs, steps, *leaf.shape[1:]), batch
    )


# The whole matrix of issue 3: every storage (ndim 1 and 2), writer and sampler.
# Each component either compiles or is refused at construction; refusals are
# listed, with the message the buffer gives, by the compile report.
STORAGES = [
    ("LazyTensorStorage", 1),
    ("LazyTensorStorage", 2),
    ("LazyMemmapStorage", 1),
    ("LazyMemmapStorage", 2),
    ("TensorStorage", 1),
    ("TensorStorage", 2),
    ("ListStorage", 1),
]
WRITERS = ["RoundRobinWriter", "TensorDictRoundRobinWriter", "TensorDictMaxValueWriter"]
SAMPLERS = [
    "RandomSampler",
    "SamplerWithoutReplacement",
    "SliceSampler",
    "SliceSamplerWithoutReplacement",
    "PrioritizedSampler",
    "PrioritizedSliceSampler",
]
# what the compile mode covers today; everything else is refused
SUPPORTED = {
    "storage": {"LazyTensorStorage", "LazyMemmapStorage", "TensorStorage"},
    "ndim": {1, 2},
    "writer": {
        "RoundRobinWriter",
        "TensorDictRoundRobinWriter",
        "TensorDictMaxValueWriter",
    },
    "sampler": {
        "RandomSampler",
        "SamplerWithoutReplacement",
        "PrioritizedSampler",
        "SliceSampler",
        "SliceSamplerWithoutReplacement",
        "PrioritizedSliceSampler",
    },
}


def make_component(kind: str, name: str, max_size: int = 100, ndim: int = 1):
    """An instance of a storage, writer or sampler of the matrix, by name.

    A LazyMemmapStorage gets no scratch_dir: its files are temporary ones. A
    TensorDictMaxValueWriter keeps the elements of largest observation. Slice
    samplers draw slices of 4 steps (the trajectories of make_batch have 7).
    """
    from torchrl.data.replay_buffers import samplers, storages, writers

    if kind == "storage":
        cls = getattr(storages, name)
        if name == "ListStorage":
            return cls(max_size)
        if name == "TensorStorage":
            shape = [max_size] if ndim == 1 else [max_size // 4, 4]
            done = torch.zeros(*shape, 1, dtype=torch.bool)
            data = {"obs": torch.zeros(*shape, 4), "next": {"done": done}}
            return cls(TensorDict(data, shape), ndim=ndim)
        return cls(max_size, ndim=ndim)
    if kind == "writer":
        if name == "TensorDictMaxValueWriter":
            # ranks by the sum of the observation (batches carry no reward)
            return writers.TensorDictMaxValueWriter(rank_key="obs")
        return getattr(writers, name)()
    cls = getattr(samplers, name)
    if name == "PrioritizedSampler":
        return cls(max_size, alpha=0.7, beta=0.5)
    if name == "PrioritizedSliceSampler":
        return cls(max_size, alpha=0.7, beta=0.5, slice_len=4)
    if name.startswith("Slice"):
        return cls(slice_len=4)
    return cls()


def is_supported(storage: str, ndim: int, writer: str, sampler: str) -> bool:
    if writer == "TensorDictMaxValueWriter" and ndim > 1:
        return False  # impossible at the base: the writer refuses such storages
    return (
        storage in SUPPORTED["storage"]
        and ndim in SUPPORTED["ndim"]
        and writer in SUPPORTED["writer"]
        and sampler in SUPPORTED["sampler"]
    )


def refusal(storage: str, ndim: int, writer: str, sampler: str) -> str | None:
    """The ValueError message of ReplayBuffer(compile=True) for a combination, or None if it builds."""
    from torchrl.data import ReplayBuffer

    try:
        ReplayBuffer(
            storage=make_component("storage", storage, ndim=ndim),
            writer=make_component("writer", writer),
            sampler=make_component("sampler", sampler),
            compile=True,
        )
    except ValueError as err:
        return str(err)
    return None
