"""Batches, a graph-counting backend and the storage x writer x sampler x buffer matrix,
shared by the compile report and the acceptance suite."""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

# The patch series whose fork runs these cases: "main" (torchrl main) or
# "v0.6.0". scripts/test.sh and the scripts set RB_SERIES; otherwise the
# installed torchrl tells.
SERIES_NAMES = ("main", "v0.6.0")


def detect_series() -> str:
    """The series of the installed fork, from its layout (a wheel base has no version):
    main splits the replay-buffer modules into packages, v0.6.0 does not."""
    from torchrl.data.replay_buffers import storages

    return "main" if hasattr(storages, "__path__") else "v0.6.0"


SERIES = os.environ.get("RB_SERIES") or detect_series()
if SERIES not in SERIES_NAMES:
    raise ValueError(f"RB_SERIES={SERIES!r}: pick one of {', '.join(SERIES_NAMES)}")


def host_syncs(gm) -> list[str]:
    """The operations of an ATen graph (and of its subgraphs) that make the host wait
    for the device on a GPU.

    - an op that binds a data-dependent size or value (an unbacked symbol:
      ``aten._local_scalar_dense`` from ``.item()``, ``nonzero``, ``masked_select``,
      boolean indexing...): the host reads it back;
    - ``torch.cond`` and ``while_loop``: inductor reads the predicate on the host
      (its wrapper writes ``if pred.item():``), at each iteration for a loop.
    """
    found = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            sub = getattr(gm, node.target, None)
            if isinstance(sub, torch.fx.GraphModule):
                found += host_syncs(sub)
        elif node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            if isinstance(node.target, torch._ops.HigherOrderOperator):
                if name in ("cond", "while_loop"):
                    found.append(name)
            elif (
                node.meta.get("unbacked_bindings")
                or node.target is torch.ops.aten._local_scalar_dense.default
            ):
                found.append(str(node.target))
    return found


class GraphCounter:
    """A torch.compile backend that counts the graphs it compiles and runs them eagerly.

    A graph break or a recompilation shows as one more graph. ``backend`` names a
    backend of torch's to compile them with instead. ``"aot_eager"`` traces them
    through AOTAutograd as inductor does (functionalization), and then
    ``host_syncs`` lists the host syncs (see :func:`host_syncs`) of the ATen graphs,
    in the order compiled.
    """

    def __init__(self, backend: str | None = None):
        self.graphs = 0
        self.backend = backend
        self.host_syncs = []

    def _scan(self, gm, example_inputs):
        from torch._dynamo.backends.debugging import boxed_nop

        self.host_syncs += host_syncs(gm)
        return boxed_nop(gm, example_inputs)

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        if self.backend is None:
            return gm.forward
        import torch._dynamo

        if self.backend == "aot_eager":
            # aot_eager, with a first look at the forward graph
            from torch._dynamo.backends.common import aot_autograd
            from torch._dynamo.backends.debugging import boxed_nop
            from torch._functorch.partitioners import (
                min_cut_rematerialization_partition,
            )

            return aot_autograd(
                fw_compiler=self._scan,
                bw_compiler=boxed_nop,
                partition_fn=min_cut_rematerialization_partition,
                keep_inference_input_mutations=True,
            )(gm, example_inputs)
        return torch._dynamo.lookup_backend(self.backend)(gm, example_inputs)


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
# what the compile mode covers, in both series (main since its patch 21, the
# PrioritizedSliceSampler); everything else is refused
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
# the key of the importance weights in a prioritized sample's info
WEIGHT_KEY = "_weight" if SERIES == "v0.6.0" else "priority_weight"
# How far a compiled prioritized sampler's priorities may be from eager mode's
# (relative). The trees sum and compare the same leaves as eager mode's trees, but
# a leaf, (p + eps) ** alpha, is a CPU kernel's power: ATen's vectorized pow and its
# scalar one round apart by an ulp, and which of the two computes an element depends
# on the CPU's vector width (AVX2 or AVX-512) and the tensor's length. Eager mode
# takes the power of the priorities of a filtered index, or of a 0-dim default
# priority; compile mode of the unfiltered ones, or of the default expanded to the
# index (and main's by a tensor alpha). So, with the aot_eager backend, a few
# float32 ulps (1.2e-7 each); with inductor, which fuses the priority math,
# allclose's default rtol.
PRIORITIES_RTOL = 1e-6


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
            # preallocated with the layout of the matrix's batches: steps x envs
            # for ndim=2
            template = matrix_batch([max_size], 0).zero_()
            if ndim == 2:
                template = template.reshape(max_size // MATRIX_ENVS, MATRIX_ENVS)
            return cls(template, ndim=ndim)
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


# The buffers of the matrix. ReplayBuffer and TensorDictReplayBuffer take every
# writer and sampler; the prioritized buffers make their own PrioritizedSampler
# and writer (RoundRobinWriter, TensorDictRoundRobinWriter).
BUFFERS = [
    "ReplayBuffer",
    "TensorDictReplayBuffer",
    "PrioritizedReplayBuffer",
    "TensorDictPrioritizedReplayBuffer",
]
PRIORITIZED_BUFFER_WRITERS = {
    "PrioritizedReplayBuffer": "RoundRobinWriter",
    "TensorDictPrioritizedReplayBuffer": "TensorDictRoundRobinWriter",
}
MATRIX_MAX_SIZE = 100
# batches of 30 elements, which do not divide the capacity: the cursor wraps at a
# new place each lap; with ndim=2, of 4 envs x 7 steps, extended along the steps
MATRIX_BATCH = 30
MATRIX_ENVS = 4
MATRIX_SAMPLE = 8  # two slices of 4 steps for the slice samplers
MATRIX_CALLS = 20


def matrix_batch(shape, step: int) -> TensorDict:
    """A tensordict batch of the matrix, of nested keys and mixed dtypes.

    The observations take values that overlap from batch to batch, with ties, so
    that a TensorDictMaxValueWriter (ranking by ``obs``) keeps some elements of
    each batch; ``("next", "done")`` ends a trajectory every 7 elements.
    """
    shape = torch.Size(shape)
    batch = make_batch("tensordict", shape.numel(), step)
    value = ((torch.arange(shape.numel()) * 37 + step * 11) % 50).float()
    batch["obs"] = value[:, None].expand(-1, 4).clone()
    return batch.reshape(shape)


@dataclass(frozen=True)
class Combination:
    """A buffer of the matrix: buffer class, storage (with its ndim), writer and sampler."""

    buffer: str
    storage: str
    ndim: int
    writer: str
    sampler: str

    @property
    def name(self) -> str:
        return (
            f"{self.buffer}-{self.storage}-ndim{self.ndim}-{self.writer}-{self.sampler}"
        )

    @property
    def prioritized(self) -> bool:
        return self.sampler.startswith("Prioritized")

    @property
    def supported(self) -> bool:
        return is_supported(self.storage, self.ndim, self.writer, self.sampler)

    def build(self, compile, max_size: int = MATRIX_MAX_SIZE):
        """The buffer, built empty, in compile mode or not (``compile=False``)."""
        import torchrl.data

        cls = getattr(torchrl.data, self.buffer)
        kwargs = {
            "storage": make_component("storage", self.storage, max_size, self.ndim),
            "batch_size": MATRIX_SAMPLE,
            "compile": compile,
        }
        if self.buffer in PRIORITIZED_BUFFER_WRITERS:
            kwargs.update(alpha=0.7, beta=0.5)
        else:
            kwargs["writer"] = make_component("writer", self.writer)
            kwargs["sampler"] = make_component("sampler", self.sampler, max_size)
        return cls(**kwargs)

    def refusal(self) -> str | None:
        """The ValueError message of the buffer built with ``compile=True``, or None."""
        try:
            self.build(True)
        except ValueError as err:
            return str(err)
        return None

    def batch(self, step: int) -> TensorDict:
        if self.ndim == 1:
            return matrix_batch([MATRIX_BATCH], step)
        # envs first, as a collector of MATRIX_ENVS environments gives them
        steps = MATRIX_BATCH // MATRIX_ENVS
        return matrix_batch([steps, MATRIX_ENVS], step).transpose(0, 1)


def matrix_combinations() -> list[Combination]:
    """Every storage (ndim 1, 2) x writer x sampler with ReplayBuffer and
    TensorDictReplayBuffer, and every storage with the two prioritized buffers."""
    combinations = []
    for buffer in BUFFERS:
        writers, samplers = WRITERS, SAMPLERS
        if buffer in PRIORITIZED_BUFFER_WRITERS:
            writers = [PRIORITIZED_BUFFER_WRITERS[buffer]]
            samplers = ["PrioritizedSampler"]
        for (storage, ndim), writer, sampler in itertools.product(
            STORAGES, writers, samplers
        ):
            combinations.append(Combination(buffer, storage, ndim, writer, sampler))
    return combinations


def _outside_matrix_main():
    # main's other samplers, writers and buffers, each with a LazyTensorStorage and
    # the default components otherwise
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers import replay_buffers, samplers, writers

    def buffer(**kwargs):
        return ReplayBuffer(
            storage=LazyTensorStorage(MATRIX_MAX_SIZE), compile=True, **kwargs
        )

    def ensemble():
        return replay_buffers.ReplayBufferEnsemble(
            ReplayBuffer(storage=LazyTensorStorage(MATRIX_MAX_SIZE)),
            ReplayBuffer(storage=LazyTensorStorage(MATRIX_MAX_SIZE)),
            compile=True,
        )

    return {
        "StalenessAwareSampler": lambda: buffer(
            sampler=samplers.StalenessAwareSampler()
        ),
        "ConsumingSampler (consume_after_n_samples=)": lambda: buffer(
            consume_after_n_samples=2
        ),
        "PromptGroupSampler": lambda: buffer(
            sampler=samplers.PromptGroupSampler(num_groups=2)
        ),
        "ImmutableDatasetWriter": lambda: buffer(
            writer=writers.ImmutableDatasetWriter()
        ),
        "ReplayBufferEnsemble (StorageEnsemble, WriterEnsemble, SamplerEnsemble)": ensemble,
    }


def outside_matrix() -> dict:
    """The components of the series' base that the matrix leaves out, each as a builder
    of a buffer with ``compile=True`` (main only: v0.6.0's matrix is its whole scope)."""
    return _outside_matrix_main() if SERIES == "main" else {}


def leaves(data) -> list:
    return torch.utils._pytree.tree_flatten(data)[0]


def buffer_differences(rb, rb_eager, write_count: bool = True) -> list[str]:
    """How a buffer differs from its eager twin: length, writer state, stored values.

    ``write_count=False`` leaves out the write count, which torchrl's checkpoints
    do not keep. An empty list means the same buffer.
    """
    differences = []
    for what, got, expected in (
        ("length", len(rb), len(rb_eager)),
        ("cursor", rb._writer._cursor, rb_eager._writer._cursor),
        ("write count", rb.write_count, rb_eager.write_count),
    ):
        if (what != "write count" or write_count) and got != expected:
            differences.append(f"{what} {got}, eager {expected}")
    if len(rb) and len(rb) == len(rb_eager):
        got, expected = leaves(rb[:]), leaves(rb_eager[:])
        if len(got) != len(expected):
            differences.append(f"{len(got)} stored leaves, eager {len(expected)}")
        for i, (x, y) in enumerate(zip(got, expected)):
            if x.dtype != y.dtype or x.shape != y.shape or not (x == y).all():
                differences.append(f"stored leaf {i} differs from eager")
    return differences


def priority_differences(rb, rb_eager, exact: bool = True) -> list[str]:
    """How a prioritized sampler differs from its eager twin's: its sum and min trees,
    max priority and default priority. ``exact`` allows the pow kernels' rounding
    (PRIORITIES_RTOL); ``exact=False`` the rounding of inductor's fused math."""
    rtol = PRIORITIES_RTOL if exact else 1e-5
    differences = []
    leaves_index = torch.arange(rb.sampler.max_size).numpy()
    for tree in ("_sum_tree", "_min_tree"):
        got = torch.as_tensor(getattr(rb.sampler, tree)[leaves_index])
        expected = torch.as_tensor(getattr(rb_eager.sampler, tree)[leaves_index])
        # atol=0: a leaf written in one buffer only is never "close" to a zero
        if not torch.allclose(got, expected, rtol=rtol, atol=0):
            worst = ((got - expected).abs() / expected.abs()).nan_to_num().max()
            differences.append(f"{tree} differs from eager (relative {worst:.1e})")
    for what in ("_max_priority", "default_priority"):
        got, expected = getattr(rb.sampler, what), getattr(rb_eager.sampler, what)
        if what == "_max_priority":
            got, expected = got[0], expected[0]
        if got is None or expected is None:
            same = got is expected
        else:
            # max_priority_within_buffer recomputes the max from the trees' leaves
            same = math.isclose(float(got), float(expected), rel_tol=rtol)
        if not same:
            differences.append(f"{what} {got}, eager {expected}")
    return differences


def index_problems(index, rb) -> list[str]:
    """Why a sampled index is not within the filled part of the storage (a tuple of
    one index per dim for storages of ndim > 1, and for slice samplers)."""
    storage = rb._storage
    if storage.ndim == 1 and isinstance(index, tuple):
        (index,) = index
    if storage.ndim == 1:
        if not ((index >= 0) & (index < len(rb))).all():
            return [f"index out of [0, {len(rb)})"]
        return []
    if not isinstance(index, tuple) or len(index) != storage.ndim:
        return [f"expected a tuple of {storage.ndim} indices"]
    return [
        f"index of dim {dim} out of [0, {size})"
        for dim, (index_dim, size) in enumerate(zip(index, storage.shape))
        if not ((index_dim >= 0) & (index_dim < size)).all()
    ]


def sample_problems(rb, sample, info) -> list[str]:
    """Why a sample is not valid: an index out of the filled part, or values that are
    not the stored ones at the index."""
    index = info["index"]
    problems = index_problems(index, rb)
    if problems:
        return problems
    expected = rb.storage[index]
    if is_tensordict_buffer(rb):
        # the buffer writes the index and the info into the sample: the weights,
        # and the done/truncated/terminated flags of the slices of slice samplers
        written = ["index", *info.keys()]
        sample, expected = sample.exclude(*written), expected.exclude(*written)
    got, expected = leaves(sample), leaves(expected)
    if len(got) != len(expected) or any(
        x.shape != y.shape or not (x == y).all() for x, y in zip(got, expected)
    ):
        return ["sampled values are not the stored ones at the index"]
    return []


def is_tensordict_buffer(rb) -> bool:
    from torchrl.data import TensorDictReplayBuffer

    return isinstance(rb, TensorDictReplayBuffer)


# The host syncs that the graphs of the matrix still hold (host_syncs), by where
# they run (the buffer's compile= graphs, or the user's fullgraph step) and
# component, with why: (where, kind, name, sync, reason). Each one misses the
# performance issue's goal of no host sync in any graph; they are listed so that
# any other sync, or one of these gone, shows as a miss of the matrix
# (MatrixRun.misses, FullgraphRun.misses). Checked over main's whole matrix and
# CI's v0.6.0 subset. Outside the matrix, SliceSampler(strict_length=False) and
# span= return a batch whose size depends on the data: its size is read on the
# host, as here for main's SliceSamplerWithoutReplacement.
KNOWN_HOST_SYNCS = [
    (
        "compile",
        "sampler",
        "SliceSamplerWithoutReplacement",
        "sample: cond",
        "the next permutation of the trajectories is drawn within the graph, with "
        "torch.cond, as only the graph knows how many trajectories there are"
        + (
            " (main: with ndim=2 only; since main patch 36, with ndim=1 the "
            "trajectory index counts them, and the compiled read draws the "
            "permutation before the graph)"
            if SERIES == "main"
            else ""
        ),
    ),
    (
        "compile",
        "writer",
        "TensorDictMaxValueWriter",
        "extend: while_loop",
        "the batch is inserted one element at a time, as in eager mode (ties "
        "included), in a while_loop",
    ),
    (
        "fullgraph",
        "sampler",
        "SamplerWithoutReplacement",
        "step: cond",
        "within the user's graph, the next permutation is drawn with torch.cond "
        "(compile= draws it eagerly, before the compiled read)",
    ),
    (
        "fullgraph",
        "sampler",
        "SliceSamplerWithoutReplacement",
        "step: cond",
        "as with compile=",
    ),
    (
        "fullgraph",
        "writer",
        "TensorDictMaxValueWriter",
        "step: while_loop",
        "as with compile=",
    ),
]
if SERIES == "main":
    KNOWN_HOST_SYNCS += [
        (
            "compile",
            "sampler",
            "SliceSamplerWithoutReplacement",
            "sample: aten.repeat_interleave.Tensor",
            "the size of a batch depends on the data, as in eager mode (main patch "
            "29): the slices of the trajectories shorter than a slice are dropped, "
            "and a batch ends with its permutation",
        ),
        (
            "fullgraph",
            "sampler",
            "SliceSamplerWithoutReplacement",
            "step: aten.repeat_interleave.Tensor",
            "as with compile=",
        ),
    ]
# Eager mode's error where a batch of the SliceSamplerWithoutReplacement draws only
# trajectories shorter than a slice (main, as in eager mode since its patch 29): the
# matrix's trajectories (of 7 steps, and some of 1 or 2) make it happen in a few
# samples of each run. compile= raises it after its graph, and the matrix counts it
# as a sample that eager mode fails too (within the user's step the batch is empty
# instead: the step cannot fail without losing its writes).
SHORT_BATCH_ERROR = "None of the provided indices pointed to a trajectory"


# The known host syncs that a component keeps with storages of some ndim only,
# (where, name, sync): the ndims (others: every ndim). Main patch 36: a
# SliceSamplerWithoutReplacement on a storage of one dim draws from the trajectory
# index, whose count of trajectories lets compile='s read draw the next permutation
# before the graph.
HOST_SYNC_NDIMS = (
    {("compile", "SliceSamplerWithoutReplacement", "sample: cond"): {2}}
    if SERIES == "main"
    else {}
)


def expected_host_syncs(combination, where: str) -> set:
    """The host syncs KNOWN_HOST_SYNCS expects of a combination's graphs, ``where``
    being ``"compile"`` (the buffer's own) or ``"fullgraph"`` (the user's step)."""
    return {
        sync
        for place, kind, name, sync, _ in KNOWN_HOST_SYNCS
        if place == where
        and getattr(combination, kind) == name
        and combination.ndim in HOST_SYNC_NDIMS.get((place, name, sync), {1, 2})
    }


def host_sync_misses(found, expected) -> list[str]:
    found, expected = set(found), set(expected)
    out = [f"host sync in {sync}" for sync in sorted(found - expected)]
    out += [
        f"no {sync} any more: remove it from KNOWN_HOST_SYNCS"
        for sync in sorted(expected - found)
    ]
    return out


@dataclass
class MatrixRun:
    """What a combination did, compiled with a counting backend, beside its eager twin."""

    extend_graphs: int = 0
    sample_graphs: int = 0
    update_graphs: int | None = None
    # graphs compiled by the calls that interleave the three
    more_graphs: int = 0
    graph_breaks: int = 0
    # invalid samples, differences from eager
    problems: list = field(default_factory=list)
    # samples that raised eager mode's SHORT_BATCH_ERROR
    short_batches: int = 0
    # "path: operation" for each host sync of the graphs (host_syncs), and those
    # that KNOWN_HOST_SYNCS expects
    host_syncs: list = field(default_factory=list)
    expected_host_syncs: set = field(default_factory=set)

    def misses(self, prioritized: bool) -> list[str]:
        """How the run falls short of the goal: one graph for each of extend, sample
        and (prioritized only) update_priority, none more when they are interleaved,
        no graph break, the same as eager, and no host sync but the known ones.
        Empty when it meets it."""
        out = list(self.problems)
        out += host_sync_misses(self.host_syncs, self.expected_host_syncs)
        for path, graphs, expected in (
            ("extend", self.extend_graphs, 1),
            ("sample", self.sample_graphs, 1),
            ("update_priority", self.update_graphs, 1 if prioritized else None),
        ):
            if graphs != expected:
                out.append(f"{path}: {graphs} graphs, expected {expected}")
        if self.more_graphs:
            out.append(f"{self.more_graphs} more graphs when interleaved")
        if self.graph_breaks:
            out.append(f"{self.graph_breaks} graph breaks")
        return out


def run_compiled(combination: Combination, calls: int = MATRIX_CALLS) -> MatrixRun:
    """Builds the combination empty with ``compile=`` and a counting backend (over
    aot_eager, which traces the graphs through AOTAutograd as inductor does), and an
    eager twin; runs ``calls`` extends (past capacity), samples and (prioritized)
    update_priority calls, then interleaves the three; counts the graphs of each and
    compares the buffers, and each sample with the storage."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    counter = GraphCounter("aot_eager")
    rb = combination.build({"backend": counter})
    rb_eager = combination.build(False)
    run = MatrixRun()

    def extend(step):
        batch = combination.batch(step)
        index, index_eager = rb.extend(batch.clone()), rb_eager.extend(batch.clone())
        if not (index == index_eager).all():
            run.problems.append(f"extend {step}: indices differ from eager")

    def sample(step):
        try:
            sample, info = rb.sample(return_info=True)
        except RuntimeError as err:
            if SHORT_BATCH_ERROR not in str(err):
                raise
            run.short_batches += 1
            return None
        run.problems += [
            f"sample {step}: {p}" for p in sample_problems(rb, sample, info)
        ]
        return info["index"]

    def update(step, index):
        priority = (
            torch.rand(MATRIX_SAMPLE, generator=torch.Generator().manual_seed(step)) + 1
        )
        rb.update_priority(index, priority)
        rb_eager.update_priority(index, priority)

    # the first extend and the first sample run eagerly: they initialize the storage
    # and the caches a graph would otherwise guard on
    def syncs(path):
        # the host syncs of the graphs compiled since the last call, for this path
        run.host_syncs += sorted({f"{path}: {op}" for op in counter.host_syncs})
        counter.host_syncs.clear()

    extend(0)
    sample(0)
    for step in range(1, calls + 1):
        extend(step)
    run.extend_graphs = counter.graphs
    syncs("extend")
    indices = [sample(step) for step in range(calls)]
    run.sample_graphs = counter.graphs - run.extend_graphs
    syncs("sample")
    if combination.prioritized:
        for step, index in enumerate(indices):
            if index is not None:
                update(step, index)
        run.update_graphs = counter.graphs - run.extend_graphs - run.sample_graphs
        syncs("update_priority")
    graphs = counter.graphs
    for step in range(calls + 1, calls + 6):
        extend(step)
        index = sample(step)
        if combination.prioritized and index is not None:
            update(step, index)
    run.more_graphs = counter.graphs - graphs
    if run.short_batches > calls // 2:
        run.problems.append(
            f"{run.short_batches} samples raised: {SHORT_BATCH_ERROR} (eager mode's "
            "error, expected in a few samples)"
        )
    syncs("interleaved")
    run.expected_host_syncs = expected_host_syncs(combination, "compile")
    run.graph_breaks = sum(counters["graph_break"].values())
    run.problems += buffer_differences(rb, rb_eager)
    if combination.prioritized:
        run.problems += priority_differences(rb, rb_eager)
    return run


@dataclass
class FullgraphRun:
    """The combination within the user's ``torch.compile(step, fullgraph=True)``."""

    # graphs compiled so far, after each call
    graphs: list = field(default_factory=list)
    # a LazyMemmapStorage is extended once, eagerly, before
    extended_before: bool = False
    error: str | None = None
    problems: list = field(default_factory=list)
    host_syncs: list = field(default_factory=list)
    expected_host_syncs: set = field(default_factory=set)

    def misses(self) -> list[str]:
        """How the step falls short of the goal: it compiles, at most once more after
        its first call (which initializes a lazy storage; not once more when the
        storage was extended before), then never, leaves the buffer as eager mode
        does, and its graphs hold no host sync but the known ones. Empty when it
        meets it."""
        if self.error is not None:
            return [self.error]
        out = list(self.problems)
        out += host_sync_misses(self.host_syncs, self.expected_host_syncs)
        graphs = self.graphs
        once_more = 1 if self.extended_before else 2
        if (
            len(graphs) < 2
            or graphs[0] != 1
            or not graphs[-1] == graphs[1] <= once_more
        ):
            out.append(f"graphs after each call: {graphs}")
        return out


def run_fullgraph(combination: Combination, calls: int = MATRIX_CALLS) -> FullgraphRun:
    """Builds the combination empty with ``compile=True`` and traces it within the user's
    fullgraph step (extend, sample, and update_priority with priorities from the sample),
    beside an eager twin given the same batches and priorities.

    A LazyMemmapStorage creates its files when first extended, which a graph cannot do:
    it is extended once, eagerly, before.
    """
    import torch._dynamo

    torch._dynamo.reset()
    counter = GraphCounter("aot_eager")
    rb = combination.build(True)
    rb_eager = combination.build(False)
    run = FullgraphRun()
    if combination.storage == "LazyMemmapStorage":
        run.extended_before = True
        for buffer in (rb, rb_eager):
            buffer.extend(combination.batch(-1))

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        sample, info = rb.sample(return_info=True)
        if combination.prioritized:
            rb.update_priority(info["index"], sample["obs"][:, 0] + 1)
        return sample, info

    for i in range(calls):
        batch = combination.batch(i)
        try:
            sample, info = step(batch.clone())
        except Exception as err:  # reported: the report covers every combination
            run.error = f"{type(err).__name__}: {str(err).strip()[:200]}"
            return run
        run.graphs.append(counter.graphs)
        run.problems += [f"step {i}: {p}" for p in sample_problems(rb, sample, info)]
        rb_eager.extend(batch.clone())
        if combination.prioritized:
            rb_eager.update_priority(info["index"], sample["obs"][:, 0] + 1)
    run.problems += buffer_differences(rb, rb_eager)
    if combination.prioritized:
        run.problems += priority_differences(rb, rb_eager)
    run.host_syncs = sorted({f"step: {op}" for op in counter.host_syncs})
    run.expected_host_syncs = expected_host_syncs(combination, "fullgraph")
    return run
