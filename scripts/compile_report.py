"""Reports how the patched torchrl's ReplayBuffer(compile=...) compiles, case by case.

For each supported case it counts, with a counting backend, the graphs compiled
for ``extend`` and ``sample`` over calls that fill and wrap the buffer, the graph
breaks and recompilations, checks that the buffer traces within a user's
``torch.compile(step, fullgraph=True)``, and times eager against compiled calls.

usage: python scripts/compile_report.py [--markdown FILE] [--calls N]
                                        [--timing-backend NAME | --no-timing]
"""
from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch
import torch._dynamo

from rb_compile_cases import (
    GraphCounter,
    is_supported,
    make_batch,
    make_component,
    make_rollout,
    refusal,
    SAMPLERS,
    STORAGES,
    WRITERS,
)
from torch._dynamo.utils import counters
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBuffer,
    TensorDictReplayBuffer,
    TensorStorage,
)
from torchrl.data.replay_buffers.samplers import (
    PrioritizedSampler,
    PrioritizedSliceSampler,
    RandomSampler,
    SamplerWithoutReplacement,
    SliceSampler,
    SliceSamplerWithoutReplacement,
)
from torchrl.data.replay_buffers.writers import (
    RoundRobinWriter,
    TensorDictRoundRobinWriter,
)

MAX_SIZE = 1000
# memory-mapped storages write here; removed at exit
SCRATCH = tempfile.TemporaryDirectory(prefix="compile_report-")
BATCH = 300  # does not divide MAX_SIZE: the cursor wraps at a new place each lap
SAMPLE = 256
# ndim=2 storages: steps of ENVS environments, extended with rollouts of
# ENVS x BATCH // ENVS (as a collector of ENVS environments gives them)
ENVS = 4


@dataclass(frozen=True)
class Case:
    storage: type
    writer: type
    datatype: str
    buffer: type = ReplayBuffer
    sampler: type = RandomSampler
    ndim: int = 1

    @property
    def name(self):
        buffer = "" if self.buffer is ReplayBuffer else f"{self.buffer.__name__}-"
        ndim = "" if self.ndim == 1 else f"-ndim{self.ndim}"
        return (
            f"{buffer}{self.storage.__name__}{ndim}-{self.writer.__name__}"
            f"-{self.sampler.__name__}-{self.datatype}"
        )

    def batch(self, step):
        if self.ndim == 1:
            return make_batch(self.datatype, BATCH, step)
        return make_rollout(self.datatype, ENVS, BATCH // ENVS, step)

    @property
    def prioritized(self):
        return issubclass(self.sampler, PrioritizedSampler)


CASES = [
    Case(LazyTensorStorage, RoundRobinWriter, "tensor"),
    Case(LazyTensorStorage, RoundRobinWriter, "tensordict"),
    Case(LazyTensorStorage, RoundRobinWriter, "pytree"),
    Case(LazyMemmapStorage, RoundRobinWriter, "tensordict"),
    Case(TensorStorage, RoundRobinWriter, "tensordict"),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
    ),
    Case(
        LazyTensorStorage,
        RoundRobinWriter,
        "tensordict",
        sampler=SamplerWithoutReplacement,
    ),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
        SamplerWithoutReplacement,
    ),
    Case(LazyTensorStorage, RoundRobinWriter, "tensor", sampler=PrioritizedSampler),
    Case(LazyTensorStorage, RoundRobinWriter, "pytree", sampler=PrioritizedSampler),
    Case(LazyMemmapStorage, RoundRobinWriter, "tensordict", sampler=PrioritizedSampler),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
        PrioritizedSampler,
    ),
    Case(LazyTensorStorage, RoundRobinWriter, "tensordict", ndim=2),
    Case(
        LazyTensorStorage,
        RoundRobinWriter,
        "tensordict",
        sampler=SamplerWithoutReplacement,
        ndim=2,
    ),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
        PrioritizedSampler,
        ndim=2,
    ),
    Case(LazyTensorStorage, RoundRobinWriter, "tensordict", sampler=SliceSampler),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
        SliceSampler,
        ndim=2,
    ),
    Case(
        LazyTensorStorage,
        RoundRobinWriter,
        "tensordict",
        sampler=SliceSamplerWithoutReplacement,
    ),
    Case(
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
        TensorDictReplayBuffer,
        PrioritizedSliceSampler,
    ),
]


def make_buffer(case, compile):
    if case.storage is TensorStorage:
        if case.ndim != 1:
            raise NotImplementedError("no preallocated ndim=2 case in the report")
        storage = TensorStorage(make_batch(case.datatype, MAX_SIZE, 0).zero_())
    elif case.storage is LazyMemmapStorage:
        storage = LazyMemmapStorage(
            MAX_SIZE, scratch_dir=tempfile.mkdtemp(dir=SCRATCH.name), ndim=case.ndim
        )
    else:
        storage = case.storage(MAX_SIZE, ndim=case.ndim)
    sampler = make_component("sampler", case.sampler.__name__, MAX_SIZE)
    return case.buffer(
        storage=storage,
        writer=case.writer(),
        sampler=sampler,
        batch_size=SAMPLE,
        compile=compile,
    )


def count_graphs(case, calls):
    torch._dynamo.reset()
    counters.clear()
    counter = GraphCounter()
    rb = make_buffer(case, {"backend": counter})
    rb.extend(case.batch(0))
    rb.sample()  # the first write and the first sample run eagerly
    for step in range(calls):
        rb.extend(case.batch(step + 1))
    extend_graphs = counter.graphs
    indices = [rb.sample(return_info=True)[1]["index"] for _ in range(calls)]
    sample_graphs = counter.graphs - extend_graphs
    if not case.prioritized:
        update_graphs = None
    else:
        for step, index in enumerate(indices):
            rb.update_priority(index, torch.rand(SAMPLE) + step)
        update_graphs = counter.graphs - extend_graphs - sample_graphs
    breaks = sum(counters["graph_break"].values())
    return extend_graphs, sample_graphs, update_graphs, breaks


def fullgraph_step(case, calls):
    torch._dynamo.reset()
    counter = GraphCounter()
    rb = make_buffer(case, True)

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        sample, info = rb.sample(return_info=True)
        if case.prioritized:
            rb.update_priority(info["index"], torch.ones(SAMPLE))
        return sample

    try:
        for i in range(calls):
            step(case.batch(i))
    except Exception as err:  # reported, not raised: the report covers every case
        reason = str(err).strip().splitlines()[0][:60] if str(err).strip() else ""
        return f"no ({type(err).__name__}: {reason})"
    return f"yes ({counter.graphs} graph{'s' if counter.graphs > 1 else ''})"


MATRIX_TITLE = (
    "The whole matrix: storage (ndim 1, 2) x writer x sampler. Combinations that "
    "do not compile, by the component that stops them, with the error "
    "ReplayBuffer(compile=True) raises at construction:"
)


def refused_components():
    # builds every combination with compile=True; groups the refusals by reason
    combinations = list(itertools.product(STORAGES, WRITERS, SAMPLERS))
    supported = sum(is_supported(s, n, w, p) for (s, n), w, p in combinations)
    by_reason = {}
    for (storage, ndim), writer, sampler in combinations:
        message = refusal(storage, ndim, writer, sampler)
        if message is None:
            continue
        if "does not support " not in message:
            # refused by torchrl itself, compile or not
            parts = [("impossible at the base", message)]
        else:
            listed = message.split("does not support ", 1)[1].rstrip(".")
            parts = [
                (part.split(" (", 1)[0], part.split(" (", 1)[1].rstrip(")"))
                for part in re.split(
                    r", (?=(?:storage|writer|sampler|prefetch)=)", listed
                )
            ]
        for component, reason in parts:
            by_reason.setdefault(component, [0, reason])[0] += 1
    rows = [
        ["(none: the cases above)", f"{supported} of {len(combinations)}", "compile"]
    ]
    for component, (count, reason) in sorted(by_reason.items()):
        rows.append([component, str(count), reason])
    return rows


def time_calls(fn, repeat=7, number=20):
    # median over `repeat` runs of the mean time of `number` calls, in microseconds
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def timings(case, backend):
    torch._dynamo.reset()
    out = {}
    batches = [case.batch(i) for i in range(8)]
    for label, compile in (("eager", False), ("compiled", {"backend": backend})):
        rb = make_buffer(case, compile)
        for batch in batches:  # warm up and compile
            rb.extend(batch)
            rb.sample()
        cycle = iter(batches * 1000)
        out[f"{label} extend"] = time_calls(
            lambda rb=rb, cycle=cycle: rb.extend(next(cycle))
        )
        out[f"{label} sample"] = time_calls(rb.sample)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the report to this file")
    parser.add_argument("--calls", type=int, default=20, help="calls per check")
    parser.add_argument("--timing-backend", default="inductor")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    header = [
        "case",
        "extend graphs",
        "sample graphs",
        "update_priority graphs",
        "recompiles",
        "graph breaks",
        "fullgraph step",
    ]
    if not args.no_timing:
        header += [
            "extend µs eager",
            "extend µs compiled",
            "sample µs eager",
            "sample µs compiled",
        ]
    rows = []
    for i, case in enumerate(CASES, 1):
        print(f"[{i}/{len(CASES)}] {case.name}", file=sys.stderr, flush=True)
        extend_graphs, sample_graphs, update_graphs, breaks = count_graphs(
            case, args.calls
        )
        recompiles = sum(
            max(graphs - 1, 0)
            for graphs in (extend_graphs, sample_graphs, update_graphs or 0)
        )
        row = [
            case.name,
            str(extend_graphs),
            str(sample_graphs),
            "-" if update_graphs is None else str(update_graphs),
            str(recompiles),
            str(breaks),
            fullgraph_step(case, args.calls),
        ]
        if not args.no_timing:
            t = timings(case, args.timing_backend)
            row += [
                f"{t[k]:.0f}"
                for k in (
                    "eager extend",
                    "compiled extend",
                    "eager sample",
                    "compiled sample",
                )
            ]
        rows.append(row)
    refused = refused_components()

    notes = [
        f"{args.calls} calls each of extend (batches of {BATCH} into a capacity of "
        f"{MAX_SIZE}) and of sample ({SAMPLE} items); the first extend and the "
        "first sample run eagerly. Graphs are counted with a counting backend: a "
        "graph break or a recompilation shows as an extra graph.",
        "fullgraph step: the buffer, built empty, within the user's "
        "torch.compile(step, fullgraph=True) calling extend then sample; its "
        "first call initializes the storage, so 2 graphs are expected.",
        f"Prioritized cases: then {args.calls} calls of update_priority with the "
        "sampled indices; the fullgraph step calls update_priority too.",
        f"ndim2 cases: a storage of steps x {ENVS} envs ({MAX_SIZE} elements), "
        f"extended with rollouts of {ENVS} envs x {BATCH // ENVS} steps.",
        "Slice sampler cases: slices of 4 steps (64 per "
        "sample) of trajectories of 7 steps (next/done every 7 elements). Slice "
        "samplers read the trajectories from a tensordict storage: with tensor "
        "or pytree batches they fail at the base already, so the report runs "
        "tensordicts.",
    ]
    if not args.no_timing:
        notes.append(
            f"Times: median µs per call, eager against compiled with "
            f"backend={args.timing_backend!r}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; one noisy machine, compare ratios."
        )
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    for note in notes:
        print(f"- {note}")
    print(f"\n{MATRIX_TITLE}")
    for row in refused:
        print("  ".join(row))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| " + " | ".join(header) + " |\n")
            f.write("|" + "---|" * len(header) + "\n")
            for row in rows:
                f.write("| " + " | ".join(row) + " |\n")
            f.write("\n" + "\n".join(f"- {note}" for note in notes) + "\n")
            f.write(f"\n{MATRIX_TITLE}\n\n| component | combinations | reason |\n")
            f.write("|---|---|---|\n")
            for row in refused:
                f.write("| " + " | ".join(row) + " |\n")
        print(f"written to {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
