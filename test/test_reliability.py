"""Processes, threads and checkpoints, eager and compiled: nothing lost, nothing compiled again."""
from __future__ import annotations

import copy
import threading

import pytest
import torch
from conftest import assert_same_buffer, GraphCounter, make_batch
from tensordict import MemoryMappedTensor
from tensordict.utils import _TENSORCLASS_MEMO
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer


def batch_of(value, size=10):
    batch = make_batch("tensordict", size, 0)
    batch["obs"].fill_(value)
    return batch


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_threads_extend_and_sample(compile):
    # two writers and a reader at once: every write is counted, samples stay valid
    rb = ReplayBuffer(
        storage=LazyTensorStorage(1000),
        batch_size=32,
        compile={"backend": GraphCounter()} if compile else False,
    )
    rb.extend(batch_of(0.0))
    rb.sample()
    errors = []

    def write(value):
        try:
            for _ in range(50):
                rb.extend(batch_of(value))
        except Exception as err:  # reported by the main thread
            errors.append(err)

    def read():
        try:
            for _ in range(50):
                sample, info = rb.sample(return_info=True)
                assert (info["index"] < len(rb)).all()
                # rows come whole from one batch: the initial one (0) or a writer's
                assert set(sample["obs"][:, 0].tolist()) <= {0.0, 1.0, 2.0}
        except Exception as err:
            errors.append(err)

    threads = [
        threading.Thread(target=f, args=a)
        for f, a in ((write, (1.0,)), (write, (2.0,)), (read, ()))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert rb.write_count == 10 + 2 * 50 * 10
    assert len(rb) == 1000 and rb._writer._cursor == 10 + 2 * 50 * 10 - 1000
    # each writer's 500 rows, all of them, once
    obs = rb[:]["obs"][:, 0]
    assert (obs == 1).sum() == 500 and (obs == 2).sum() == 500


def make_storage(storage_type, path):
    if storage_type is LazyMemmapStorage:
        return LazyMemmapStorage(100, scratch_dir=path)
    return storage_type(100)


@pytest.mark.parametrize("how", ["state_dict", "dumps"])
@pytest.mark.parametrize(
    "storage_type", [LazyTensorStorage, LazyMemmapStorage], ids=lambda x: x.__name__
)
def test_checkpoint_reload_in_place_does_not_recompile(storage_type, how, tmp_path):
    # loads() fills a LazyTensorStorage with memory-mapped tensors: start from a
    # tensordict that has not memoized that type yet, whatever ran before
    _TENSORCLASS_MEMO.pop(MemoryMappedTensor, None)
    counter = GraphCounter()
    rb = ReplayBuffer(
        storage=make_storage(storage_type, tmp_path / "rb"),
        compile={"backend": counter},
    )
    rb_eager = ReplayBuffer(storage=make_storage(storage_type, tmp_path / "e"))
    for step in range(5):
        rb.extend(make_batch("tensordict", 30, step))
        rb_eager.extend(make_batch("tensordict", 30, step))
    graphs = counter.graphs
    if how == "state_dict":
        # a copy, as torch.save makes one: main's state_dict holds the storage's
        # own tensors
        state = copy.deepcopy(rb.state_dict())
    else:
        rb.dumps(tmp_path / "ckpt")
    for step in range(5, 8):  # move on, then go back to the checkpoint
        rb.extend(make_batch("tensordict", 30, step))
    if how == "state_dict":
        rb.load_state_dict(state)
    else:
        rb.loads(tmp_path / "ckpt")
    # torchrl's checkpoints keep no write count (as at v0.6.0)
    assert_same_buffer(rb, rb_eager, write_count=False)
    for step in range(5, 10):
        rb.extend(make_batch("tensordict", 30, step))
        rb_eager.extend(make_batch("tensordict", 30, step))
    assert_same_buffer(rb, rb_eager, write_count=False)
    assert counter.graphs == graphs == 1


def _extend_in_child(rb, value):
    rb.extend(torch.full((5, 2), value))


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_shared_across_processes(compile, tmp_path):
    # as collectors do: a forked process writes; its rows, length and cursor reach the parent
    rb = ReplayBuffer(
        storage=LazyMemmapStorage(20, scratch_dir=tmp_path),
        compile={"backend": GraphCounter()} if compile else False,
    )
    rb.extend(torch.zeros(5, 2))
    rb.extend(torch.ones(5, 2))  # compiled from here on, in compile mode
    proc = torch.multiprocessing.get_context("fork").Process(
        target=_extend_in_child, args=(rb, 7.0)
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    assert len(rb) == 15 and rb._writer._cursor == 15 and rb.write_count == 15
    rb.extend(torch.full((5, 2), 9.0))
    assert len(rb) == 20 and rb._writer._cursor == 0
    expected = torch.cat([torch.full((5, 2), v) for v in (0.0, 1.0, 7.0, 9.0)])
    assert (rb[:] == expected).all()
