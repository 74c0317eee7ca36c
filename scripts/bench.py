"""Benchmarks the patched fork against the unpatched base and a hand-written ring buffer.

usage: python scripts/bench.py [--series main|v0.6.0] [--quick] [--rounds N] [--out DIR]
       python scripts/bench.py [--series main|v0.6.0] --report-only [--out DIR]

Runs scripts/bench_cases.py with pytest-benchmark in two processes that take turns: the fork
of the series that scripts/fork.sh built (build/SERIES/torchrl, installed in .venv/SERIES) and
the same base without the series (a worktree of build/SERIES/torchrl at its base, first on
PYTHONPATH), with the same torch. The default series is main.
Writes into DIR (default build/bench): the raw pytest-benchmark JSON of every run, report.md
(tables of microseconds and ratios, and the targets of the series), and PNG plots.
--quick runs one round of the reference sizes only, in about a minute: CI uses it to check
that the suite runs. It asserts nothing about timings.
--report-only writes report.md and the plots again from DIR/raw/*.json, without timing
anything: copy in the raw files of another run of the same fork (as base-N.json and
fork-N.json, N a round number not in DIR yet) to take each case's least disturbed round
among both runs.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERIES_NAMES = ("main", "v0.6.0")
BASE_NAMES = {"main": "torchrl main ae9719f", "v0.6.0": "torchrl v0.6.0"}
# set by main() from --series: the fork measured, and its python
FORK = ROOT / "build" / "main" / "torchrl"
PYTHON = ROOT / ".venv" / "main" / "bin" / "python"
SERIES = "main"
IMPLS = ("base", "fork", "ring")
MODES = ("eager", "compiled")
REFERENCE = {"batch": 100, "capacity": 100_000, "sample": 256}


def fail(message: str) -> None:
    print(f"bench.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def say(message: str) -> None:
    print(f"bench.py: {message}", flush=True)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(FORK), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def prepare_base(out: pathlib.Path) -> pathlib.Path:
    """A worktree of the fork at its base, with the fork's C++ extension (unpatched)."""
    base = out / f"base-torchrl-{SERIES}"
    tag = git("rev-parse", "series-base^{commit}")
    if base.exists():
        head = subprocess.run(
            ["git", "-C", str(base), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if head != tag:
            git("worktree", "remove", "--force", str(base))
    if not base.exists():
        git("worktree", "prune")
        git("worktree", "add", "--detach", str(base), tag)
    for extension in (FORK / "torchrl").glob("_torchrl*.so"):
        # the series changes no C++ source: the fork's build is the base's
        shutil.copy2(extension, base / "torchrl" / extension.name)
    return base


def run_cases(impl, base, out, round_index, quick) -> pathlib.Path:
    json_path = out / "raw" / f"{impl}-{round_index}.json"
    # pytest-benchmark turns itself off in an xdist worker, which a caller may be
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(RB_BENCH_IMPL=impl, RB_BENCH_TMP=str(out / "tmp"))
    env["RB_BENCH_SKIPS"] = str(out / "raw" / f"{impl}-{round_index}-skips.jsonl")
    env["RB_BENCH_TORCHRL"] = str(base if impl == "base" else FORK)
    if impl == "base":
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(base), os.environ.get("PYTHONPATH")])
        )
    if quick:
        env["RB_BENCH_QUICK"] = "1"
        timing = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.02"]
        timing += ["--benchmark-warmup=off"]
    else:
        timing = ["--benchmark-min-rounds=30", "--benchmark-max-time=1.0"]
        timing += ["--benchmark-warmup=on", "--benchmark-disable-gc"]
    command = [
        str(PYTHON), "-m", "pytest", str(ROOT / "scripts" / "bench_cases.py"),
        "-o", "python_files=bench_cases.py", "-o", "python_functions=bench_*",
        "-p", "no:cacheprovider", "-v", "-rs", "--benchmark-sort=name",
        "--benchmark-columns=median,iqr,rounds", f"--benchmark-json={json_path}",
        *timing,
    ]  # fmt: skip
    pathlib.Path(env["RB_BENCH_SKIPS"]).unlink(missing_ok=True)
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=ROOT)
    if result.returncode != 0:
        fail(
            f"the {impl} benchmarks failed (pytest exit {result.returncode}), see above"
        )
    if not json.loads(json_path.read_text())["benchmarks"]:
        fail(f"the {impl} run timed no benchmark (was pytest-benchmark disabled?)")
    say(f"{impl}: done in {time.monotonic() - started:.0f} s -> {json_path}")
    return json_path


def load(out: pathlib.Path):
    """{(impl, mode, op, storage, batch, capacity, sample): [median seconds per round]}."""
    results, extra, skips = defaultdict(list), {}, {}
    for path in sorted((out / "raw").glob("*.json")):
        for bench in json.loads(path.read_text())["benchmarks"]:
            info = bench["extra_info"]
            key = tuple(info.get(name) for name in ("impl", "mode", "op", "storage"))
            key += tuple(info.get(name) for name in ("batch", "capacity", "sample"))
            results[key].append(bench["stats"]["median"])
            if "buffer_share" in info:
                extra[key] = info["buffer_share"]
    for path in sorted((out / "raw").glob("*-skips.jsonl")):
        for line in path.read_text().splitlines():
            skip = json.loads(line)
            skips[skip["case"]] = skip["reason"]
    # the least disturbed round of each case
    return {key: min(values) for key, values in results.items()}, extra, skips


def key(impl, mode, op, storage="LazyTensorStorage", **sizes):
    sizes = dict(REFERENCE, **sizes)
    if impl == "ring":
        storage = "hand-written"
    return (impl, mode, op, storage, sizes["batch"], sizes["capacity"], sizes["sample"])


def fmt_us(seconds):
    return "—" if seconds is None else f"{seconds * 1e6:,.1f}"


def ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return None
    return numerator / denominator


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}×"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def columns(results, op, storage="LazyTensorStorage", **sizes):
    cells = []
    for impl in IMPLS:
        for mode in MODES:
            if impl == "ring" and storage != "LazyTensorStorage":
                cells.append(None)  # the ring buffer is the floor of the reference only
            else:
                cells.append(results.get(key(impl, mode, op, storage, **sizes)))
    return cells


COLUMN_NAMES = [f"{impl} {mode}" for impl in IMPLS for mode in MODES]


PRIORITIZED = "LazyTensorStorage+Prioritized"
PRIORITIZED_CAPACITIES = (100_000, 1_000_000)
# bench_cases.SAMPLERS: a sample from a full storage at each of FLAT_CAPACITIES
SAMPLERS = (
    "RandomSampler",
    "SamplerWithoutReplacement",
    "PrioritizedSampler",
    "SliceSampler",
    "SliceSamplerWithoutReplacement",
    "PrioritizedSliceSampler",
)
FLAT_CAPACITIES = (1_000, 1_000_000)
MAX_VALUE = "LazyTensorStorage(1,000)+TensorDictMaxValueWriter"


def full(sampler: str) -> str:
    return f"LazyTensorStorage+{sampler} (full)"


def sum_or_none(values):
    values = list(values)
    return None if None in values else sum(values)


def targets(results):
    def best_ring(op):
        times = [results.get(key("ring", mode, op)) for mode in MODES]
        return min(filter(None, times), default=None)

    fork = {op: results.get(key("fork", "compiled", op)) for op in ("extend", "sample")}
    eager = {
        (impl, op): results.get(key(impl, "eager", op))
        for impl in ("base", "fork")
        for op in ("extend", "sample")
    }
    rows = [
        (
            "compiled extend / hand-written ring extend",
            ratio(fork["extend"], best_ring("extend")),
            "≤ 1.00×", "le", 1.0,
        ),
        (
            "compiled sample / hand-written ring sample",
            ratio(fork["sample"], best_ring("sample")),
            "≤ 1.00×", "le", 1.0,
        ),
        (
            "base eager extend / compiled extend (speed-up)",
            ratio(eager["base", "extend"], fork["extend"]),
            "≥ 4.00×", "ge", 4.0,
        ),
        (
            "patched eager extend / base eager extend",
            ratio(eager["fork", "extend"], eager["base", "extend"]),
            "≤ 1.05×", "le", 1.05,
        ),
        (
            "patched eager sample / base eager sample",
            ratio(eager["fork", "sample"], eager["base", "sample"]),
            "≤ 1.05×", "le", 1.05,
        ),
    ]  # fmt: skip
    for capacity in PRIORITIZED_CAPACITIES:
        # extend, then sample + update_priority: compiled (torch-op trees) against
        # main's eager mode (its C++ trees)
        prioritized = {
            (impl, mode): sum_or_none(
                results.get(key(impl, mode, op, PRIORITIZED, capacity=capacity))
                for op in ("extend", "sample+update_priority")
            )
            for impl, mode in (("fork", "compiled"), ("base", "eager"))
        }
        rows.append(
            (
                f"prioritized compiled / base eager, extend + sample + "
                f"update_priority, capacity {capacity:,}",
                ratio(prioritized["fork", "compiled"], prioritized["base", "eager"]),
                "≤ 1.00×",
                "le",
                1.0,
            )
        )
    small, large = FLAT_CAPACITIES
    for sampler in SAMPLERS:
        sample = {
            capacity: results.get(
                key("fork", "compiled", "sample", full(sampler), capacity=capacity)
            )
            for capacity in FLAT_CAPACITIES
        }
        rows.append(
            (
                f"compiled sample, capacity {large:,} / capacity {small:,}, {sampler}",
                ratio(sample[large], sample[small]),
                "≤ 1.50×",
                "le",
                1.5,
            )
        )
    rows.append(
        (
            "TensorDictMaxValueWriter compiled extend / base eager extend",
            ratio(
                results.get(key("fork", "compiled", "extend", MAX_VALUE)),
                results.get(key("base", "eager", "extend", MAX_VALUE)),
            ),
            "≤ 0.50×",
            "le",
            0.5,
        )
    )
    lines = []
    for name, value, goal, how, bound in rows:
        if value is None:
            verdict = "not measured"
        elif (value <= bound) if how == "le" else (value >= bound):
            verdict = "met"
        else:
            missed = value / bound if how == "le" else bound / value
            verdict = f"**missed** by {missed:.2f}×"
        lines.append((name, fmt_ratio(value), goal, verdict))
    for op in ("extend", "sample"):
        seconds = results.get(key("fork", "compiled", f"compile {op}"))
        if seconds is None:
            verdict = "not measured"
        else:
            verdict = "met" if seconds < 5 else f"**missed** by {seconds / 5:.2f}×"
        value = "—" if seconds is None else f"{seconds:.1f} s"
        lines.append(
            (
                f"first compiled call of {op} (inductor, empty caches)",
                value,
                "< 5 s",
                verdict,
            )
        )
    return table(["target", "measured", "goal", "verdict"], lines)


def report(results, extra, skips, out, quick, rounds, meta):
    parts = [
        "# Replay buffer benchmarks",
        "",
        f"{meta}. Median time per call in µs, the least disturbed of {rounds} "
        f"round(s){' (quick mode: reference sizes only, few rounds)' if quick else ''}. "
        f"base = {BASE_NAMES[SERIES]} unpatched (compiled = `torch.compile` of its `extend` and "
        "`sample`); fork = the patched series (compiled = `ReplayBuffer(compile=True)`, "
        "inductor); ring = a hand-written torch ring buffer (compiled = `torch.compile` of "
        "its methods). Reference workload: a TensorDict batch of 100 rows with 5 leaves, "
        "`LazyTensorStorage(100_000)`, `RoundRobinWriter`, `RandomSampler`, samples of 256.",
        "",
        "## Targets",
        "",
        targets(results),
        "",
        "## Reference workload",
        "",
        table(["op"] + COLUMN_NAMES, [
            [op] + [fmt_us(cell) for cell in columns(results, op)]
            for op in ("extend", "sample")
        ]),  # fmt: skip
    ]
    sections = [
        ("extend vs batch size (rows)", "extend", "batch", [1, 10, 100, 1_000, 10_000], "LazyTensorStorage"),
        ("sample vs sample size", "sample", "sample", [32, 256, 1_024, 4_096], "LazyTensorStorage"),
        ("extend vs capacity", "extend", "capacity", [1_000, 100_000, 1_000_000], "LazyTensorStorage"),
        ("sample vs capacity", "sample", "capacity", [1_000, 100_000, 1_000_000], "LazyTensorStorage"),
    ]  # fmt: skip
    for title, op, name, values, storage in sections:
        rows = []
        for value in values:
            cells = columns(results, op, storage, **{name: value})
            if any(cells):
                rows.append([f"{value:,}"] + [fmt_us(cell) for cell in cells])
        if rows:
            parts += ["", f"## {title}", "", table([name] + COLUMN_NAMES, rows)]
    rows = []
    for storage, ops in (
        ("LazyMemmapStorage", ("extend", "sample")),
        (PRIORITIZED, ("extend", "sample+update_priority")),
        ("LazyTensorStorage+WithoutReplacement", ("sample",)),
        (MAX_VALUE, ("extend",)),
    ):
        for op in ops:
            cells = columns(results, op, storage)
            rows.append([f"{storage} {op}"] + [fmt_us(cell) for cell in cells])
            if storage == PRIORITIZED:
                for capacity in PRIORITIZED_CAPACITIES[1:]:
                    cells = columns(results, op, storage, capacity=capacity)
                    if any(cells):
                        rows.append(
                            [f"{storage} {op}, capacity {capacity:,}"]
                            + [fmt_us(cell) for cell in cells]
                        )
    parts += [
        "",
        "## Other storages and samplers",
        "",
        table(["case"] + COLUMN_NAMES, rows),
    ]
    rows = []
    for sampler in SAMPLERS:
        for capacity in FLAT_CAPACITIES:
            cells = columns(results, "sample", full(sampler), capacity=capacity)
            if any(cells):
                rows.append(
                    [sampler, f"{capacity:,}"] + [fmt_us(cell) for cell in cells]
                )
    if rows:
        parts += [
            "",
            "## sample vs capacity, per sampler",
            "",
            "A sample of 256 from a full storage (the reference batch's leaves; the slice "
            "samplers take 32 slices of 8 steps from trajectories of 20 steps).",
            "",
            table(["sampler", "capacity"] + COLUMN_NAMES, rows),
        ]
    rows = []
    for impl in ("base", "fork"):
        for mode in MODES:
            k = key(impl, mode, "collector loop")
            if k in results:
                share = extra.get(k)
                share = "—" if share is None else f"{share:.1%}"
                rows.append([impl, mode, f"{results[k] * 1e3:.2f}", share])
    if rows:
        parts += [
            "",
            "## The tutorial's loop",
            "",
            "`SyncDataCollector` (main: `Collector`) on gymnasium `CartPole-v1`, random policy, "
            "`frames_per_batch=200`; each batch extended into the buffer, then a sample of 256.",
            "",
            table(["impl", "mode", "ms per batch", "buffer's share of the time"], rows),
        ]
    if skips:
        parts += ["", "## Not measured", ""]
        parts += [f"- `{case}`: {reason}" for case, reason in sorted(skips.items())]
    plots = "`extend_vs_batch.png`, `sample_vs_size.png`, `sample_vs_capacity.png`"
    parts += ["", f"Plots: {plots}.", ""]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return text


def plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for op, name, values, filename in (
        ("extend", "batch", [1, 10, 100, 1_000, 10_000], "extend_vs_batch.png"),
        ("sample", "sample", [32, 256, 1_024, 4_096], "sample_vs_size.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for impl in IMPLS:
            for mode in MODES:
                points = [
                    (value, results[k] * 1e6)
                    for value in values
                    if (k := key(impl, mode, op, **{name: value})) in results
                ]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o", label=f"{impl} {mode}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{name} size (rows)")
        ax.set_ylabel(f"{op}: µs per call (median)")
        ax.set_title(f"ReplayBuffer.{op}, LazyTensorStorage(100_000), 5 leaves")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
    # the flat-in-capacity target: each sampler's sample from a full storage, compiled
    # (solid) and main's eager mode (dashed), at each capacity
    fig, ax = plt.subplots(figsize=(8, 5))
    for index, sampler in enumerate(SAMPLERS):
        color = f"C{index}"
        for impl, mode, style in (("fork", "compiled", "-"), ("base", "eager", "--")):
            points = [
                (capacity, results[k] * 1e6)
                for capacity in FLAT_CAPACITIES
                if (k := key(impl, mode, "sample", full(sampler), capacity=capacity))
                in results
            ]
            if points:
                xs, ys = zip(*points)
                label = f"{sampler}, {impl} {mode}"
                ax.plot(xs, ys, style, color=color, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("capacity (rows, full)")
    ax.set_ylabel("sample of 256: µs per call (median)")
    ax.set_title(
        "ReplayBuffer.sample per sampler: fork compiled (solid), base eager (dashed)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sample_vs_capacity.png", dpi=110)
    plt.close(fig)


def main():
    global FORK, PYTHON, SERIES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--series",
        choices=SERIES_NAMES,
        default=os.environ.get("RB_SERIES", "main"),
        help="the series whose fork to measure (default: main)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short round of the reference sizes (CI)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per implementation, taking turns (default 2)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="the report and plots again from DIR/raw/*.json, timing nothing",
    )
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()  # fmt: skip
    SERIES = args.series
    FORK = ROOT / "build" / SERIES / "torchrl"
    PYTHON = ROOT / ".venv" / SERIES / "bin" / "python"
    if not PYTHON.exists() or not (FORK / ".git").exists():
        fail(f"no fork to measure: run scripts/fork.sh --series {SERIES} first")
    if args.rounds < 1:
        fail("--rounds must be at least 1")
    rounds = 1 if args.quick else args.rounds
    out = args.out.resolve()
    if args.report_only:
        report_again(out, args.quick)
        return
    shutil.rmtree(out / "raw", ignore_errors=True)
    shutil.rmtree(out / "tmp", ignore_errors=True)
    (out / "raw").mkdir(parents=True)
    (out / "tmp").mkdir()
    base = prepare_base(out)
    versions = subprocess.run(
        [str(PYTHON), "-c", "import torch, tensordict; print(torch.__version__, tensordict.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    meta = f"torch {versions[0]}, tensordict {versions[1]}, {os.cpu_count()} CPU(s)"
    (out / "raw" / "meta.txt").write_text(meta)
    say(
        f"{meta}; base: {base} ({BASE_NAMES[SERIES]}), fork: {FORK}; {rounds} round(s) each"
    )
    for round_index in range(rounds):
        # take turns, so that a slow spell of the machine hits both sides
        order = ("base", "fork") if round_index % 2 == 0 else ("fork", "base")
        for impl in order:
            say(f"round {round_index + 1}/{rounds}: {impl}")
            run_cases(impl, base, out, round_index, args.quick)
    results, extra, skips = load(out)
    text = report(results, extra, skips, out, args.quick, rounds, meta)
    plot(results, out)
    shutil.rmtree(out / "tmp", ignore_errors=True)
    print(text)
    say(f"wrote {out / 'report.md'}, the plots and raw/*.json")


def report_again(out: pathlib.Path, quick: bool) -> None:
    # --report-only: every round of each implementation found in out/raw
    raw = out / "raw"
    rounds = {
        impl: len(list(raw.glob(f"{impl}-*[0-9].json"))) for impl in ("base", "fork")
    }
    if not rounds["base"] or not rounds["fork"]:
        fail(f"--report-only: no base-N.json and fork-N.json in {raw} to report on")
    meta_file = raw / "meta.txt"
    meta = meta_file.read_text().strip() if meta_file.exists() else "torch ?"
    results, extra, skips = load(out)
    text = report(results, extra, skips, out, quick, min(rounds.values()), meta)
    plot(results, out)
    print(text)
    say(
        f"wrote {out / 'report.md'} and the plots from {raw} ({rounds['base']} "
        f"round(s) of the base, {rounds['fork']} of the fork)"
    )


if __name__ == "__main__":
    main()
