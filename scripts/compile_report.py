"""Reports how the patched torchrl's ReplayBuffer(compile=...) compiles, case by case.

For each case it counts, with a counting backend, the graphs compiled for
``extend`` and ``sample`` over calls that fill and wrap the buffer, the graph
breaks and recompilations, and checks that the buffer traces within a user's
``torch.compile(step, fullgraph=True)``. By default it reports the seed's cases
(a LazyTensorStorage of 1000 elements, RoundRobinWriter, RandomSampler; tensors,
tensordicts and pytrees) in a minute or so. With --full it reports every case the
series compiles, times eager against compiled calls, then runs the same checks,
without timing, over the whole matrix of buffers, storages, writers and samplers,
against eager twins, and lists the combinations refused at construction with the
reason (about 25 minutes on 2 CPUs; with --no-timing, 16 to 20, as CI runs it).

It runs against the fork of the python that runs it; --series names the series
that fork should be (main or v0.6.0, as scripts/fork.sh builds them). It exits 1,
after the report, when a case or combination misses the goal (a graph more than
one per path, a graph break, a difference from eager, a fullgraph step that fails
or compiles again), and names each; test_compile.py's test_matrix_* check the
matrix's rows the same way.

usage: python scripts/compile_report.py [--series main|v0.6.0] [--full] [--markdown FILE]
                                        [--calls N] [--only REGEX] [--jobs N]
                                        [--timing-backend NAME | --no-timing]
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import as_completed, ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch._dynamo

from rb_compile_cases import (
    BUFFERS,
    detect_series,
    FullgraphRun,
    GraphCounter,
    is_supported,
    KNOWN_HOST_SYNCS,
    make_batch,
    make_component,
    make_rollout,
    MATRIX_BATCH,
    matrix_combinations,
    MATRIX_ENVS,
    MATRIX_MAX_SIZE,
    MATRIX_SAMPLE,
    MatrixRun,
    outside_matrix,
    run_compiled,
    run_fullgraph,
    SERIES,
    SERIES_NAMES,
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
    TensorDictMaxValueWriter,
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
    Case(
        LazyTensorStorage,
        TensorDictMaxValueWriter,
        "tensordict",
        TensorDictReplayBuffer,
    ),
]


def case_supported(case) -> bool:
    """Whether the series compiles the case (the report's cases of the v0.6.0
    series that the forward port to main does not cover yet are left out)."""
    return case.buffer.__name__ in BUFFERS and is_supported(
        case.storage.__name__, case.ndim, case.writer.__name__, case.sampler.__name__
    )


# the seed's cases: the buffer of the notes that started the work, with each data type
SEED_CASES = CASES[:3]


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
    run = FullgraphRun(extended_before=case.storage is LazyMemmapStorage)
    if run.extended_before:
        # it creates its files when first extended, which a graph cannot do
        rb.extend(case.batch(-1))

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
            run.graphs.append(counter.graphs)
    except Exception as err:  # reported, not raised: the report covers every case
        run.error = f"{type(err).__name__}: {err}"
        run.graphs.append(counter.graphs)
    return run


OUTSIDE_TITLE = (
    "The other samplers, writers and buffers of the base, outside the matrix (each "
    "with a LazyTensorStorage), refused at construction with compile=True: what "
    "ReplayBuffer(compile=True) (or the buffer class) says it does not support, and "
    "what it expects instead:"
)
KNOWN_SYNCS_TITLE = (
    "The host syncs the compile mode's graphs still hold, where the matrix has the "
    "component (compile: the buffer's graphs; fullgraph: the user's step), and why "
    "(scripts/rb_compile_cases.py's KNOWN_HOST_SYNCS):"
)
REFUSED_TITLE = (
    "The combinations refused at construction, by the component that stops them, "
    "with the error ReplayBuffer(compile=True) (or the buffer class) raises:"
)


def fullgraph_cell(run):
    """The fullgraph step column of a case or a combination."""
    if run.error is not None:
        kind, _, message = run.error.partition(": ")
        lines = message.strip().splitlines()
        return f"no ({kind}: {lines[0][:60] if lines else ''})"
    graphs = run.graphs[-1]
    before = ", extended once before" if run.extended_before else ""
    cell = f"yes{before} ({graphs} graph{'s' if graphs > 1 else ''})"
    if run.problems:
        cell += f"; differs: {run.problems[0]}"
    return cell


def matrix_row(combination, calls):
    """The row of a combination that compiles, its graphs against its eager twin, and
    how it misses the goal (test_compile.py's test_matrix_* check the same)."""
    run = run_compiled(combination, calls)
    fullgraph = run_fullgraph(combination, calls)
    row = [
        combination.name,
        str(run.extend_graphs),
        str(run.sample_graphs),
        "-" if run.update_graphs is None else str(run.update_graphs),
        str(run.more_graphs),
        str(run.graph_breaks),
        "yes" if not run.problems else f"no ({run.problems[0]})",
        fullgraph_cell(fullgraph),
        "; ".join(run.host_syncs + fullgraph.host_syncs) or "none",
    ]
    misses = run.misses(combination.prioritized)
    misses += [f"fullgraph step: {miss}" for miss in fullgraph.misses()]
    return row, misses


def _worker_init():
    # one thread a process: the processes share the cores
    warnings.filterwarnings("ignore")
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    torch.set_num_threads(1)


def matrix_rows(combinations, calls, jobs, progress):
    """The rows of the combinations that compile and their misses (``matrix_row``),
    computed by ``jobs`` processes."""
    if jobs == 1:
        rows = []
        for i, combination in enumerate(combinations, 1):
            progress(f"[matrix {i}/{len(combinations)}] {combination.name}")
            rows.append(matrix_row(combination, calls))
        return rows
    # spawned, not forked: this process has run inductor's threads
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, context, initializer=_worker_init) as pool:
        futures = {pool.submit(matrix_row, c, calls): c for c in combinations}
        for i, future in enumerate(as_completed(futures), 1):
            progress(f"[matrix {i}/{len(combinations)}] {futures[future].name}")
        return [future.result() for future in futures]


def refusal_list(message: str) -> str | None:
    # what a refusal of compile= lists ("storage=... (expected ...), writer=..."), or
    # None for another error
    if "does not support " not in message:
        return None
    return message.split("does not support ", 1)[1].rstrip(".")


def refused_components(combinations):
    # builds every combination with compile=True; groups the refusals by reason
    by_reason = {}
    for combination in combinations:
        message = combination.refusal()
        if message is None:
            raise RuntimeError(f"{combination.name} is not refused")
        listed = refusal_list(message)
        if listed is None:
            # refused by torchrl itself, compile or not
            parts = [("impossible at the base", message)]
        else:
            parts = [
                (part.split(" (", 1)[0], part.split(" (", 1)[1].rstrip(")"))
                for part in re.split(
                    r", (?=(?:storage|writer|sampler|prefetch)=)", listed
                )
            ]
        for component, reason in parts:
            by_reason.setdefault(component, [0, reason])[0] += 1
    return [
        [component, str(count), reason]
        for component, (count, reason) in sorted(by_reason.items())
    ]


def refused_outside_matrix():
    # main's other components, outside the matrix: built with compile=True, each
    # must be refused at construction; its reasons, as refused_components gives them
    rows = []
    for name, build in outside_matrix().items():
        try:
            build()
        except ValueError as err:
            message = str(err)
        else:
            raise RuntimeError(f"{name} with compile=True is not refused")
        listed = refusal_list(message)
        if listed is None:
            raise RuntimeError(f"{name}: not the refusal of compile=: {message}")
        rows.append([name, listed])
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


def print_table(header, rows):
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--series",
        choices=SERIES_NAMES,
        help="the series the fork should be (default: the installed torchrl's)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="every case, the timings and the whole matrix (about 25 minutes)",
    )
    parser.add_argument("--markdown", help="also write the report to this file")
    parser.add_argument("--calls", type=int, default=20, help="calls per check")
    parser.add_argument(
        "--only",
        metavar="REGEX",
        help="only the cases and matrix combinations whose name matches (re.search); "
        "the refusals are always listed",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes that run the matrix (default: 2, or 1 on one core)",
    )
    parser.add_argument("--timing-backend", default="inductor")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.calls < 2:
        parser.error("--jobs takes 1 or more, --calls 2 or more")
    if args.series is not None and args.series != SERIES:
        parser.error(
            f"--series {args.series}, but this python runs the {SERIES} series' fork "
            f"(installed torchrl: {detect_series()}): run it with .venv/{args.series}/bin/python"
        )
    if not args.full:
        # the seed's cases, counted: the timings and the matrix come with --full
        args.no_timing = True
    warnings.filterwarnings("ignore")
    # main's storages log each initialization at INFO: keep the report readable
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    only = re.compile(args.only) if args.only else None

    started = time.monotonic()

    def progress(message):
        # with the time since the start, which says where a long run spends it
        elapsed = time.monotonic() - started
        print(f"{message} (at {elapsed:.0f} s)", file=sys.stderr, flush=True)

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
    cases = [
        case
        for case in (CASES if args.full else SEED_CASES)
        if case_supported(case) and (only is None or only.search(case.name))
    ]
    rows = []
    misses = {}  # name: how the case or combination falls short of the goal
    for i, case in enumerate(cases, 1):
        progress(f"[{i}/{len(cases)}] {case.name}")
        extend_graphs, sample_graphs, update_graphs, breaks = count_graphs(
            case, args.calls
        )
        recompiles = sum(
            max(graphs - 1, 0)
            for graphs in (extend_graphs, sample_graphs, update_graphs or 0)
        )
        fullgraph = fullgraph_step(case, args.calls)
        row = [
            case.name,
            str(extend_graphs),
            str(sample_graphs),
            "-" if update_graphs is None else str(update_graphs),
            str(recompiles),
            str(breaks),
            fullgraph_cell(fullgraph),
        ]
        # the cases are not compared with eager: the matrix's rows are
        misses[case.name] = MatrixRun(
            extend_graphs, sample_graphs, update_graphs, graph_breaks=breaks
        ).misses(case.prioritized) + [
            f"fullgraph step: {miss}" for miss in fullgraph.misses()
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

    if args.full:
        combinations = matrix_combinations()
        compiled = [c for c in combinations if c.supported]
        refused = refused_components([c for c in combinations if not c.supported])
        matrix = []
        for row, row_misses in matrix_rows(
            [c for c in compiled if only is None or only.search(c.name)],
            args.calls,
            args.jobs,
            progress,
        ):
            matrix.append(row)
            misses[row[0]] = row_misses

    notes = [
        f"{args.calls} calls each of extend (batches of {BATCH} into a capacity of "
        f"{MAX_SIZE}) and of sample ({SAMPLE} items); the first extend and the "
        "first sample run eagerly. Graphs are counted with a counting backend: a "
        "graph break or a recompilation shows as an extra graph.",
        "fullgraph step: the buffer, built empty, within the user's "
        "torch.compile(step, fullgraph=True) calling extend then sample; its "
        "first call initializes the storage, so 2 graphs are expected. A "
        "LazyMemmapStorage creates files when first extended, which a graph "
        "cannot do: it is extended once, eagerly, before (1 graph).",
    ]
    kinds = {
        "prioritized": any(case.prioritized for case in cases),
        "ndim2": any(case.ndim == 2 for case in cases),
        "slice": any("Slice" in case.sampler.__name__ for case in cases),
        "max value": any(case.writer is TensorDictMaxValueWriter for case in cases),
    }
    if kinds["prioritized"]:
        notes.append(
            f"Prioritized cases: then {args.calls} calls of update_priority with the "
            "sampled indices; the fullgraph step calls update_priority too."
        )
    if kinds["ndim2"]:
        notes.append(
            f"ndim2 cases: a storage of steps x {ENVS} envs ({MAX_SIZE} elements), "
            f"extended with rollouts of {ENVS} envs x {BATCH // ENVS} steps."
        )
    if kinds["slice"]:
        notes.append(
            "Slice sampler cases: slices of 4 steps (64 per "
            "sample) of trajectories of 7 steps (next/done every 7 elements). Slice "
            "samplers read the trajectories from a tensordict storage: with tensor "
            "or pytree batches they fail at the base already, so the report runs "
            "tensordicts."
        )
    if kinds["max value"]:
        notes.append(
            "TensorDictMaxValueWriter case: ranked by ('next', 'reward'), which grows "
            "from call to call, so that every element of a batch is inserted, one at "
            "a time as in eager mode."
        )
    if not args.no_timing:
        notes.append(
            f"Times: median µs per call, eager against compiled with "
            f"backend={args.timing_backend!r}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; one noisy machine, compare ratios."
        )
    title = f"The {SERIES} series, torch {torch.__version__}: " + (
        "every case it compiles." if args.full else "the seed's cases."
    )
    print(title)
    print_table(header, rows)
    for note in notes:
        print(f"- {note}")
    if not args.full:
        print(
            "- The timings, every case and the whole matrix: compile_report.py --full "
            "(scripts/fork.sh --full-report)."
        )
    sections = [title + "\n\n" + markdown_table(header, rows)]
    sections.append("\n".join(f"- {note}" for note in notes) + "\n")
    if args.full:
        prioritized_buffers = [b for b in BUFFERS if "Prioritized" in b]
        matrix_title = (
            f"The whole matrix: {len(combinations)} combinations of buffer, storage "
            "(ndim 1, 2), writer and sampler (ReplayBuffer and TensorDictReplayBuffer "
            "with each storage, writer and sampler"
            + (
                f"; {' and '.join(prioritized_buffers)} with each storage"
                if prioritized_buffers
                else ""
            )
            + f"). {len(compiled)} compile, {len(combinations) - len(compiled)} are "
            "refused (below)."
        )
        matrix_header = [
            "combination",
            "extend graphs",
            "sample graphs",
            "update_priority graphs",
            "graphs when interleaved",
            "graph breaks",
            "same as eager",
            "fullgraph step",
            "host syncs",
        ]
        matrix_notes = [
            "Each built empty with compile= and a counting backend over aot_eager "
            "(which traces the graphs through AOTAutograd, as inductor does), beside "
            "an eager twin given the same batches (tensordicts of nested keys and "
            f"mixed dtypes, {MATRIX_BATCH} elements, or {MATRIX_ENVS} envs x "
            f"{MATRIX_BATCH // MATRIX_ENVS} steps for ndim=2, into a capacity of "
            f"{MATRIX_MAX_SIZE}): {args.calls} extends, then {args.calls} samples of "
            f"{MATRIX_SAMPLE}, then (prioritized) "
            f"{args.calls} update_priority calls, then 5 calls of the three "
            "interleaved, which should compile nothing more. Same as eager: indices "
            "returned by extend, every sample holds the stored values at its index, "
            "then length, cursor, write count, contents (and priorities) equal at "
            "the end.",
            "fullgraph step: the same, built empty, within the user's "
            "torch.compile(step, fullgraph=True) calling extend, sample (and "
            "update_priority); graphs compiled after the last call, and whether the "
            "buffer is the same as its eager twin's.",
            "host syncs: the operations of the ATen graphs (compile='s, by path, and "
            "the fullgraph step's) that make the host wait for a GPU: torch.cond and "
            "while_loop, whose predicate inductor reads on the host, and ops of "
            "data-dependent size or value (.item(), nonzero). Each is a known one, "
            "with its reason below; any other fails the report.",
        ]
        print(f"\n{matrix_title}")
        print_table(matrix_header, matrix)
        for note in matrix_notes:
            print(f"- {note}")
        known = [
            [f"{kind}={name}", where, sync, reason]
            for where, kind, name, sync, reason in KNOWN_HOST_SYNCS
        ]
        known_header = ["component", "graphs", "host sync", "why"]
        print(f"\n{KNOWN_SYNCS_TITLE}")
        print_table(known_header, known)
        print(f"\n{REFUSED_TITLE}")
        print_table(["component", "combinations", "reason"], refused)
        sections.append(f"{matrix_title}\n\n" + markdown_table(matrix_header, matrix))
        sections.append("\n".join(f"- {note}" for note in matrix_notes) + "\n")
        sections.append(
            f"{KNOWN_SYNCS_TITLE}\n\n" + markdown_table(known_header, known)
        )
        sections.append(
            f"{REFUSED_TITLE}\n\n"
            + markdown_table(["component", "combinations", "reason"], refused)
        )
        outside = refused_outside_matrix()
        if outside:
            print(f"\n{OUTSIDE_TITLE}")
            print_table(["component", "refused with"], outside)
            sections.append(
                f"{OUTSIDE_TITLE}\n\n"
                + markdown_table(["component", "refused with"], outside)
            )
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(sections))
        progress(f"written to {args.markdown}")
    missed = {name: m for name, m in misses.items() if m}
    if missed:
        progress(
            f"compile_report.py: {len(missed)} of {len(misses)} cases and "
            "combinations miss the goal (one graph per path, no graph break, no "
            "recompile, the same as eager, the fullgraph step):"
        )
        for name, name_misses in missed.items():
            progress(f"  {name}: {'; '.join(name_misses)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
