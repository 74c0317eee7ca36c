"""The GPU measurements of issue 19, in one short run: the main series' buffer on a CUDA
storage, eager, compiled and compiled with CUDA graphs, against a hand-written ring buffer.

Meant for the device machine, after ``scripts/fork.sh --series main`` there (CUDA torch):

    .venv/main/bin/python scripts/gpu_bench.py --out "$OUT"   # minutes; not yet timed on a GPU

``--device cpu --quick`` checks the script itself on a machine without a GPU (the
numbers then say nothing about a GPU). What it measures, side by side in one process,
on the reference workload of scripts/bench.py (TensorDict batches of 100 rows and 5
leaves, ``LazyTensorStorage(100_000, device=...)``, samples of 256):

- ``extend`` and ``sample``, per call (the median of ``--rounds`` timed loops, each
  synchronized at its end), for: the buffer in eager mode, ``compile=True``,
  ``compile={"mode": "reduce-overhead"}`` (CUDA graphs), and the ring buffer in eager
  mode and compiled;
- the graphs each compiled path made after its warm-up calls (0 is the goal: no
  recompile), its first compiled calls' time, and how many graphs inductor ran without
  CUDA graphs (``cudagraph_skips``: 0 is the goal with ``reduce-overhead``);
- the host syncs of 10 compiled extend + sample calls, in and around the graphs,
  counted by ``torch.cuda.set_sync_debug_mode("warn")`` (CUDA only; 0 is the goal);
- unless ``--no-collector``: the tutorial's loop (a ``SyncDataCollector`` on CartPole,
  200 frames per batch, extend then sample 256), the buffer's share of its time, eager
  and compiled.

Writes ``gpu-bench.json`` and ``gpu-bench.md`` to ``--out`` (default build/gpu).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from bench_cases import cartpole_collector, reference_batch, RingBuffer
from torchrl.data import LazyTensorStorage, ReplayBuffer


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def per_call_us(fn, calls: int, rounds: int, device) -> float:
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


class SyncCounter:
    """Counts the host syncs that CUDA's sync debug mode warns about."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.count = None if not self.cuda else 0

    def __enter__(self):
        if self.cuda:
            self._catch = warnings.catch_warnings(record=True)
            self._records = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            self._catch.__exit__(*exc)
            self.count = sum(
                "synchroniz" in str(record.message) for record in self._records
            )


def measure_buffers(args) -> list[dict]:
    device, rows = args.device, []
    batches = [reference_batch(args.batch).to(device) for _ in range(8)]
    variants = [
        ("eager", False),
        ("compiled", True),
        ("compiled, CUDA graphs", {"mode": "reduce-overhead"}),
    ]
    for name, compile in variants:
        torch._dynamo.reset()
        skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
        rb = ReplayBuffer(
            storage=LazyTensorStorage(args.capacity, device=device),
            batch_size=args.sample,
            compile=compile,
        )
        step = iter(range(10**9))
        first = time.perf_counter()
        rb.extend(batches[0])
        rb.extend(batches[1])  # the first write runs eagerly: the second compiles
        rb.sample()
        rb.sample()
        synchronize(device)
        first = time.perf_counter() - first
        for _ in range(args.warmup):
            rb.extend(batches[next(step) % 8])
            rb.sample()
        before = graphs()
        extend = per_call_us(
            lambda: rb.extend(batches[next(step) % 8]), args.calls, args.rounds, device
        )
        sample = per_call_us(rb.sample, args.calls, args.rounds, device)
        # apart from the timed loops, whose synchronize() would count
        with SyncCounter(device) as syncs:
            for _ in range(10):
                rb.extend(batches[next(step) % 8])
                rb.sample()
        skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] - skips
        rows.append(
            {
                "impl": "series",
                "mode": name,
                "extend_us": extend,
                "sample_us": sample,
                "new_graphs": graphs() - before if compile else None,
                "first_calls_s": first if compile else None,
                "host_syncs": syncs.count if compile else None,
                "cudagraph_skips": skips if compile else None,
            }
        )
        print(f"gpu_bench: {rows[-1]}", flush=True)
    for name, compiled in (("ring, eager", False), ("ring, compiled", True)):
        torch._dynamo.reset()
        leaves = [dict(batch.items(True, True)) for batch in batches]
        ring = RingBuffer(args.capacity, leaves[0], compilable=compiled)
        extend_fn, sample_fn = ring.extend, ring.sample
        if compiled:
            extend_fn, sample_fn = torch.compile(extend_fn), torch.compile(sample_fn)
        step = iter(range(10**9))
        for _ in range(args.warmup):
            extend_fn(leaves[next(step) % 8])
            sample_fn(args.sample)
        before = graphs()
        extend = per_call_us(
            lambda: extend_fn(leaves[next(step) % 8]), args.calls, args.rounds, device
        )
        sample = per_call_us(
            lambda: sample_fn(args.sample), args.calls, args.rounds, device
        )
        rows.append(
            {
                "impl": "ring",
                "mode": name,
                "extend_us": extend,
                "sample_us": sample,
                "new_graphs": graphs() - before if compiled else None,
            }
        )
        print(f"gpu_bench: {rows[-1]}", flush=True)
    return rows


def measure_collector(args) -> list[dict]:
    rows = []
    for name, compile in (("eager", False), ("compiled", True)):
        torch._dynamo.reset()
        try:
            collector = cartpole_collector(
                frames_per_batch=200, total_frames=200 * (args.collector_batches + 5)
            )
        except Exception as error:  # gymnasium missing, or no CartPole
            print(f"gpu_bench: no collector loop: {error}", flush=True)
            return rows + [{"mode": "collector", "skipped": str(error)}]
        rb = ReplayBuffer(
            storage=LazyTensorStorage(args.capacity, device=args.device),
            batch_size=args.sample,
            compile=compile,
        )
        buffer_s, start = 0.0, time.perf_counter()
        for i, data in enumerate(collector):
            tick = time.perf_counter()
            rb.extend(data.reshape(-1).to(args.device))
            rb.sample()
            synchronize(args.device)
            if i >= 5:  # the first batches compile
                buffer_s += time.perf_counter() - tick
            else:
                start = time.perf_counter()
        total_s = time.perf_counter() - start
        collector.shutdown()
        rows.append(
            {
                "mode": f"collector loop, {name}",
                "batches": args.collector_batches,
                "buffer_s": buffer_s,
                "total_s": total_s,
                "buffer_share": buffer_s / total_s,
            }
        )
        print(f"gpu_bench: {rows[-1]}", flush=True)
    return rows


def cell(value) -> str:
    return "" if value is None else str(value)


def markdown(args, rows) -> str:
    lines = [
        f"torch {torch.__version__}, device {args.device}"
        + (
            f" ({torch.cuda.get_device_name()})"
            if args.device.startswith("cuda")
            else ""
        ),
        f"batches of {args.batch} rows, capacity {args.capacity:,}, samples of "
        f"{args.sample}; {args.calls} calls x {args.rounds} rounds",
        "",
        "| impl | mode | extend (µs) | sample (µs) | graphs after warm-up | host syncs "
        "| cudagraph skips |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "extend_us" in row:
            lines.append(
                f"| {row['impl']} | {row['mode']} | {row['extend_us']:.1f} | "
                f"{row['sample_us']:.1f} | {cell(row.get('new_graphs'))} | "
                f"{cell(row.get('host_syncs'))} | {cell(row.get('cudagraph_skips'))} |"
            )
    for row in rows:
        if "buffer_share" in row:
            lines.append(
                f"\n{row['mode']}: the buffer took {row['buffer_s']:.2f} s of "
                f"{row['total_s']:.2f} s ({row['buffer_share']:.0%})"
            )
        elif "skipped" in row:
            lines.append(f"\ncollector loop not run: {row['skipped']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--sample", type=int, default=256)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--collector-batches", type=int, default=50)
    parser.add_argument("--no-collector", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="few calls: checks the script"
    )
    parser.add_argument("--out", type=Path, default=Path("build/gpu"))
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.warmup, args.collector_batches = 10, 2, 3, 5
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_bench: error: no CUDA device (--device cpu checks the script)")
        return 2
    if not args.device.startswith("cuda"):
        # inductor's CPU kernels otherwise wait on OpenMP threads whose cores other
        # processes hold (milliseconds a call on a loaded machine)
        torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = measure_buffers(args)
    if not args.no_collector:
        rows += measure_collector(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-bench.json").write_text(json.dumps(rows, indent=1))
    (args.out / "gpu-bench.md").write_text(markdown(args, rows))
    print(markdown(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
