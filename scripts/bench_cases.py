"""The cases of scripts/bench.py, timed by pytest-benchmark.

scripts/bench.py runs this module in two processes: the patched fork (RB_BENCH_IMPL=fork)
and the unpatched base (RB_BENCH_IMPL=base), each with its own torchrl. The hand-written
ring buffer runs in the fork's process only. Every benchmark records what it measured in
``extra_info`` (impl, mode, op and sizes), which bench.py turns into tables and plots.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
import time

import pytest
import torch
import torchrl
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import (
    PrioritizedSampler,
    PrioritizedSliceSampler,
    SamplerWithoutReplacement,
    SliceSampler,
    SliceSamplerWithoutReplacement,
)
from torchrl.data.replay_buffers.writers import TensorDictMaxValueWriter

IMPL = os.environ.get("RB_BENCH_IMPL", "fork")
_expected = os.environ.get("RB_BENCH_TORCHRL")
if _expected and not os.path.realpath(torchrl.__file__).startswith(
    os.path.realpath(_expected)
):
    raise RuntimeError(
        f"the {IMPL} benchmarks imported torchrl from {torchrl.__file__}, not {_expected}"
    )
QUICK = os.environ.get("RB_BENCH_QUICK") == "1"
HAS_COMPILE_MODE = "compile" in inspect.signature(ReplayBuffer.__init__).parameters
MODES = ["eager", "compiled"]
REFERENCE = {"batch": 100, "capacity": 100_000, "sample": 256}
WARMUP_CALLS = 3 if QUICK else 20


def reference_batch(size: int) -> TensorDict:
    """The reference workload's batch: 5 leaves, as a transition of a small control task."""
    return TensorDict(
        {
            "obs": torch.randn(size, 4),
            "action": torch.randint(2, (size, 1)),
            "next": {
                "obs": torch.randn(size, 4),
                "reward": torch.randn(size, 1),
                "done": torch.zeros(size, 1, dtype=torch.bool),
            },
        },
        [size],
    )


class RingBuffer:
    """The floor a user could write by hand: one preallocated tensor per leaf.

    ``extend`` writes at ``(cursor + arange(n)) % capacity``; ``sample`` gathers at random
    indices. With ``compilable=True`` the cursor and the length are 0-d tensors updated in
    place, so that torch.compile makes one graph of each method (Python ints would be
    guarded on and compile again as they change). The storage is on the example's device.
    """

    def __init__(self, capacity: int, example: dict, compilable: bool):
        self.capacity = capacity
        self.compilable = compilable
        self.device = next(iter(example.values())).device
        self.storage = {
            key: torch.empty(
                capacity, *value.shape[1:], dtype=value.dtype, device=self.device
            )
            for key, value in example.items()
        }
        if compilable:
            self.cursor = torch.zeros((), dtype=torch.long, device=self.device)
            self.length = torch.zeros((), dtype=torch.long, device=self.device)
        else:
            self.cursor = self.length = 0

    def extend(self, batch: dict) -> None:
        size = next(iter(batch.values())).shape[0]
        index = (torch.arange(size, device=self.device) + self.cursor) % self.capacity
        for key, value in batch.items():
            self.storage[key][index] = value
        if self.compilable:
            self.cursor.copy_((self.cursor + size) % self.capacity)
            self.length.copy_((self.length + size).clamp_max(self.capacity))
        else:
            self.cursor = (self.cursor + size) % self.capacity
            self.length = min(self.length + size, self.capacity)

    def sample(self, size: int) -> dict:
        if self.compilable:
            index = torch.randint(2**62, (size,), device=self.device) % self.length
        else:
            index = torch.randint(self.length, (size,), device=self.device)
        return {key: stored[index] for key, stored in self.storage.items()}


def skip_and_report(reason):
    # a gap worth listing in the report, unlike the skips that avoid measuring twice
    path = os.environ.get("RB_BENCH_SKIPS")
    if path:
        case = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
        with open(path, "a") as file:
            file.write(json.dumps({"case": f"{IMPL}: {case}", "reason": reason}) + "\n")
    pytest.skip(reason)


def make_buffer(
    mode, capacity, sample, storage="LazyTensorStorage", sampler=None, writer=None
):
    if storage == "LazyMemmapStorage":
        scratch = tempfile.mkdtemp(
            prefix="rb-bench-", dir=os.environ.get("RB_BENCH_TMP")
        )
        storage = LazyMemmapStorage(capacity, scratch_dir=scratch)
    else:
        storage = LazyTensorStorage(capacity)
    kwargs = {"storage": storage, "batch_size": sample, "sampler": sampler}
    if writer is not None:
        kwargs["writer"] = writer
    if mode == "eager":
        return ReplayBuffer(**kwargs)
    if HAS_COMPILE_MODE:
        try:
            return ReplayBuffer(compile=True, **kwargs)
        except ValueError as error:
            skip_and_report(f"not in the fork's compile mode yet: {error}")
    # the base: what a user gets by compiling the buffer's methods
    rb = ReplayBuffer(**kwargs)
    rb.extend = torch.compile(rb.extend)
    rb.sample = torch.compile(rb.sample)
    return rb


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # graphs of earlier cases share code objects with this one: without a reset they
    # would count towards its recompile limit, past which dynamo silently runs eagerly
    torch._dynamo.reset()


def record(benchmark, op, mode, impl=IMPL, **sizes):
    benchmark.group = op
    benchmark.extra_info.update(impl=impl, mode=mode, op=op, **sizes)


def warm_up(rb, batch):
    # fills the buffer past its first writes and compiles (or recompiles) what needs it
    for _ in range(WARMUP_CALLS):
        rb.extend(batch)
        rb.sample()


def base_compiled_only_for_reference(mode, storage, **sizes):
    # compiling the base's methods breaks graphs and recompiles: measured once, on the
    # reference workload, rather than compiled again for every case
    reference = storage == "LazyTensorStorage" and sizes == REFERENCE
    if IMPL == "base" and mode == "compiled" and not reference:
        pytest.skip("the base compiled is measured on the reference workload only")


def time_op(benchmark, mode, op, storage="LazyTensorStorage", **sizes):
    """Times extend (of a batch) or sample on a buffer filled by warm_up."""
    sizes = dict(REFERENCE, **sizes)
    base_compiled_only_for_reference(mode, storage, **sizes)
    rb = make_buffer(mode, sizes["capacity"], sizes["sample"], storage=storage)
    data = reference_batch(sizes["batch"])
    warm_up(rb, data)
    record(benchmark, op, mode, storage=storage, **sizes)
    if op == "extend":
        benchmark(rb.extend, data)
    else:
        benchmark(rb.sample)


def _sizes(name, values, quick):
    return pytest.mark.parametrize(name, [quick] if QUICK else values)


@pytest.mark.parametrize("mode", MODES)
@_sizes("batch", [1, 10, 100, 1_000, 10_000], 100)
def bench_extend(benchmark, mode, batch):
    time_op(benchmark, mode, "extend", batch=batch)


@pytest.mark.parametrize("mode", MODES)
@_sizes("sample", [32, 256, 1_024, 4_096], 256)
def bench_sample(benchmark, mode, sample):
    time_op(benchmark, mode, "sample", sample=sample)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", ["extend", "sample"])
@_sizes("capacity", [1_000, 100_000, 1_000_000], 100_000)
def bench_capacity(benchmark, mode, op, capacity):
    if capacity == REFERENCE["capacity"]:
        pytest.skip(
            "the reference capacity is measured by bench_extend and bench_sample"
        )
    time_op(benchmark, mode, op, capacity=capacity)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", ["extend", "sample"])
def bench_memmap(benchmark, mode, op):
    time_op(benchmark, mode, op, storage="LazyMemmapStorage")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", ["extend", "sample+update_priority"])
@_sizes("capacity", [100_000, 1_000_000], 100_000)
def bench_prioritized(benchmark, mode, op, capacity):
    base_compiled_only_for_reference(mode, "LazyTensorStorage+Prioritized")
    try:
        sampler = PrioritizedSampler(capacity, alpha=0.7, beta=0.5)
    except Exception as error:  # no C++ extension in a wheel base
        skip_and_report(f"PrioritizedSampler unavailable: {error}")
    rb = make_buffer(mode, capacity, REFERENCE["sample"], sampler=sampler)
    data = reference_batch(REFERENCE["batch"])
    warm_up(rb, data)
    priority = torch.rand(REFERENCE["sample"])

    def sample_and_update():
        _, info = rb.sample(return_info=True)
        rb.update_priority(info["index"], priority)

    sizes = dict(REFERENCE, capacity=capacity)
    record(benchmark, op, mode, storage="LazyTensorStorage+Prioritized", **sizes)
    benchmark(rb.extend, data) if op == "extend" else benchmark(sample_and_update)


@pytest.mark.parametrize("mode", MODES)
def bench_without_replacement(benchmark, mode):
    # the buffer full, sampled over epochs: a permutation is drawn every
    # capacity / sample calls
    base_compiled_only_for_reference(mode, "LazyTensorStorage+WithoutReplacement")
    capacity = REFERENCE["capacity"]
    rb = make_buffer(
        mode, capacity, REFERENCE["sample"], sampler=SamplerWithoutReplacement()
    )
    rb.extend(reference_batch(capacity))
    for _ in range(WARMUP_CALLS):
        rb.sample()
    record(
        benchmark,
        "sample",
        mode,
        storage="LazyTensorStorage+WithoutReplacement",
        **REFERENCE,
    )
    benchmark(rb.sample)


# The samplers of the per-call-cost-flat-in-capacity target, each built for a capacity.
# The slice samplers take slices of 8 steps from trajectories of TRAJECTORY steps (the
# reference batch's ("next", "done") ends them).
TRAJECTORY = 20
SLICES = {"slice_len": 8, "end_key": ("next", "done")}
SAMPLERS = {
    "RandomSampler": lambda capacity: None,
    "SamplerWithoutReplacement": lambda capacity: SamplerWithoutReplacement(),
    "PrioritizedSampler": lambda capacity: PrioritizedSampler(capacity, 0.7, 0.5),
    "SliceSampler": lambda capacity: SliceSampler(**SLICES),
    "SliceSamplerWithoutReplacement": lambda capacity: SliceSamplerWithoutReplacement(
        **SLICES
    ),
    "PrioritizedSliceSampler": lambda capacity: PrioritizedSliceSampler(
        capacity, 0.7, 0.5, **SLICES
    ),
}
FLAT_CAPACITIES = [1_000, 1_000_000]


def trajectories(size: int) -> TensorDict:
    """The reference batch, cut into trajectories of TRAJECTORY steps by ("next", "done")."""
    data = reference_batch(size)
    data["next", "done"][TRAJECTORY - 1 :: TRAJECTORY] = True
    return data


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@_sizes("capacity", FLAT_CAPACITIES, 1_000)
def bench_sampler_capacity(benchmark, mode, sampler, capacity):
    # a sample of 256 from a full storage, for each sampler, at capacities 1,000 and
    # 1,000,000: the cost of a sample should not grow with the capacity
    storage = f"LazyTensorStorage+{sampler} (full)"
    base_compiled_only_for_reference(mode, storage)
    try:
        made = SAMPLERS[sampler](capacity)
    except Exception as error:  # no C++ extension in a wheel base
        skip_and_report(f"{sampler} unavailable: {error}")
    rb = make_buffer(mode, capacity, REFERENCE["sample"], sampler=made)
    rb.extend(trajectories(capacity))
    for _ in range(WARMUP_CALLS):
        rb.sample()
    sizes = dict(REFERENCE, capacity=capacity)
    record(benchmark, "sample", mode, storage=storage, **sizes)
    benchmark(rb.sample)


@pytest.mark.parametrize("mode", MODES)
def bench_max_value(benchmark, mode):
    # TensorDictMaxValueWriter keeping the best 1,000 of the batches by their
    # ("next", "reward"): a full buffer, where every extend ranks its batch
    storage = "LazyTensorStorage(1,000)+TensorDictMaxValueWriter"
    base_compiled_only_for_reference(mode, storage)
    capacity = 1_000
    rb = make_buffer(
        mode,
        capacity,
        REFERENCE["sample"],
        writer=TensorDictMaxValueWriter(rank_key=("next", "reward")),
    )
    data = reference_batch(REFERENCE["batch"])
    for _ in range(capacity // REFERENCE["batch"]):
        rb.extend(reference_batch(REFERENCE["batch"]))
    warm_up(rb, data)
    record(benchmark, "extend", mode, storage=storage, **REFERENCE)
    benchmark(rb.extend, data)


ring_only_in_fork = pytest.mark.skipif(
    IMPL != "fork", reason="the ring buffer runs in the fork's process"
)


def make_ring(mode, sizes):
    data = dict(reference_batch(sizes["batch"]).items(True, True))
    ring = RingBuffer(sizes["capacity"], data, compilable=mode == "compiled")
    extend, sample = ring.extend, ring.sample
    if mode == "compiled":
        extend, sample = torch.compile(extend), torch.compile(sample)
    for _ in range(WARMUP_CALLS):
        extend(data)
        sample(sizes["sample"])
    return extend, sample, data


@ring_only_in_fork
@pytest.mark.parametrize("mode", MODES)
@_sizes("batch", [1, 10, 100, 1_000, 10_000], 100)
def bench_ring_extend(benchmark, mode, batch):
    sizes = dict(REFERENCE, batch=batch)
    extend, _, data = make_ring(mode, sizes)
    record(benchmark, "extend", mode, impl="ring", storage="hand-written", **sizes)
    benchmark(extend, data)


@ring_only_in_fork
@pytest.mark.parametrize("mode", MODES)
@_sizes("sample", [32, 256, 1_024, 4_096], 256)
def bench_ring_sample(benchmark, mode, sample):
    sizes = dict(REFERENCE, sample=sample)
    _, sample_fn, _ = make_ring(mode, sizes)
    record(benchmark, "sample", mode, impl="ring", storage="hand-written", **sizes)
    benchmark(sample_fn, sample)


def cartpole_collector(frames_per_batch: int, total_frames: int):
    """The data-collection tutorial's collector: CartPole-v1, a random policy.

    v0.6.0 calls it ``SyncDataCollector``; main renamed it ``Collector``, with the same
    arguments. Raises what the import or the environment raises (gymnasium missing).
    """
    from torchrl.envs import GymEnv

    try:
        from torchrl.collectors import RandomPolicy, SyncDataCollector as Collector
    except ImportError:  # main
        from torchrl.collectors import Collector, RandomPolicy

    env = GymEnv("CartPole-v1")
    return Collector(
        env,
        RandomPolicy(env.action_spec),
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
    )


@pytest.mark.parametrize("mode", MODES)
def bench_collector_loop(benchmark, mode):
    # the data-collection tutorial's loop: collect 200 frames, extend, sample
    base_compiled_only_for_reference(mode, "collector")
    try:
        collector = cartpole_collector(frames_per_batch=200, total_frames=-1)
    except Exception as error:  # gymnasium missing, or no CartPole
        skip_and_report(f"no collector loop on CartPole-v1: {error}")
    batches = iter(collector)
    rb = make_buffer(mode, REFERENCE["capacity"], REFERENCE["sample"])
    for _ in range(WARMUP_CALLS):
        rb.extend(next(batches))
        rb.sample()
    spent = {"buffer": 0.0, "total": 0.0}

    def step():
        start = time.perf_counter()
        data = next(batches)
        buffer_start = time.perf_counter()
        rb.extend(data)
        rb.sample()
        end = time.perf_counter()
        spent["buffer"] += end - buffer_start
        spent["total"] += end - start

    record(benchmark, "collector loop", mode, storage="LazyTensorStorage", **REFERENCE)
    benchmark.pedantic(step, rounds=5 if QUICK else 200, iterations=1, warmup_rounds=0)
    benchmark.extra_info["buffer_share"] = spent["buffer"] / spent["total"]
    collector.shutdown()


@pytest.mark.skipif(not HAS_COMPILE_MODE, reason="the base has no compile mode")
@pytest.mark.parametrize("op", ["extend", "sample"])
def bench_compile_time(benchmark, op):
    # the first compiled call with empty inductor caches (on disk and in memory), as
    # a new machine pays it
    from torch._inductor import utils as inductor_utils

    fresh_cache = getattr(inductor_utils, "fresh_cache", None)
    fresh_cache = fresh_cache or inductor_utils.fresh_inductor_cache
    data = reference_batch(REFERENCE["batch"])
    caches = contextlib.ExitStack()

    def setup():
        caches.close()
        caches.enter_context(fresh_cache())
        torch._dynamo.reset()
        rb = make_buffer("compiled", REFERENCE["capacity"], REFERENCE["sample"])
        rb.extend(data)  # the first call of each path runs eagerly
        rb.sample()
        return (rb,), {}

    def first_compiled_call(rb):
        rb.extend(data) if op == "extend" else rb.sample()

    record(
        benchmark, f"compile {op}", "compiled", storage="LazyTensorStorage", **REFERENCE
    )
    with caches:
        benchmark.pedantic(first_compiled_call, setup=setup, rounds=1 if QUICK else 3)
