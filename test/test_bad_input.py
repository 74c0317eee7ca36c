"""Bad input, eager and compiled alike: a clear error, and the buffer exactly as before."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_same_buffer, GraphCounter, leaves, make_batch, SERIES
from tensordict import TensorDict
from torch.utils._pytree import tree_map
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBuffer,
    TensorDictReplayBuffer,
)


def _set(batch, key, value):
    batch = tree_map(lambda x: x, batch)  # a new container, same leaves
    if isinstance(batch, TensorDict):
        batch[key] = value
        return batch
    node = batch
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    return batch


def _drop(batch, key):
    if isinstance(batch, TensorDict):
        return batch.exclude(key)
    batch = tree_map(lambda x: x, batch)
    del batch[key[0]][key[1]]
    return batch


N = 10
# name: (datatypes it applies to, make the bad batch from a good one, error message)
BAD = {
    "shape": (
        ("tensor", "tensordict", "pytree"),
        lambda b: torch.zeros(N, 5)
        if torch.is_tensor(b)
        else _set(b, ("obs",), torch.zeros(N, 5)),
        "Wrong shape",
    ),
    "dtype": (
        ("tensor", "tensordict", "pytree"),
        lambda b: b.double()
        if torch.is_tensor(b)
        else _set(b, ("action",), torch.zeros(N)),
        "Wrong dtype",
    ),
    "missing_key": (
        ("tensordict", "pytree"),
        lambda b: _drop(b, ("next", "done")),
        r"missing \('next', 'done'\)|structure",
    ),
    "extra_key": (
        ("tensordict", "pytree"),
        lambda b: _set(b, ("extra",), torch.zeros(N)),
        "unexpected 'extra'|structure",
    ),
    "not_batched": (
        ("tensor", "tensordict"),
        lambda b: b[0, 0] if torch.is_tensor(b) else b[0],
        "no batch dimension",
    ),
}
CASES = [
    (name, datatype, LazyTensorStorage)
    for name, (types, _, _) in BAD.items()
    for datatype in types
] + [
    (name, "tensordict", LazyMemmapStorage)
    for name in BAD
    # main drops the keys a locked storage does not hold: test_extra_key_locked
    if not (SERIES == "main" and name == "extra_key")
]


def _snapshot(rb):
    return (
        len(rb),
        int(rb._writer._cursor),
        rb.write_count,
        [x.clone() for x in leaves(rb[:])],
    )


def _make_buffers(storage_type, tmp_path, rb_type=ReplayBuffer):
    def storage(name):
        if storage_type is LazyMemmapStorage:
            return LazyMemmapStorage(100, scratch_dir=tmp_path / name)
        return storage_type(100)

    counter = GraphCounter()
    rb = rb_type(
        storage=storage("compiled"), batch_size=8, compile={"backend": counter}
    )
    rb_eager = rb_type(storage=storage("eager"), batch_size=8)
    return rb, rb_eager, counter


@pytest.mark.parametrize(
    "bad,datatype,storage_type",
    CASES,
    ids=[f"{name}-{datatype}-{storage.__name__}" for name, datatype, storage in CASES],
)
def test_bad_batch_same_error_nothing_changed(bad, datatype, storage_type, tmp_path):
    rb, rb_eager, counter = _make_buffers(storage_type, tmp_path)
    for step in range(4):  # 120 rows into 100: the next rows hold live data
        for buffer in (rb, rb_eager):
            buffer.extend(make_batch(datatype, 30, step))
            buffer.sample()
    graphs = counter.graphs
    messages = []
    for buffer in (rb, rb_eager):
        before = _snapshot(buffer)
        with pytest.raises(ValueError, match=BAD[bad][2]) as error:
            buffer.extend(BAD[bad][1](make_batch(datatype, N, 9)))
        messages.append(str(error.value))
        after = _snapshot(buffer)
        assert before[:3] == after[:3], "the length, cursor or write count moved"
        for x, y in zip(before[3], after[3]):
            assert (x == y).all(), "a stored value changed"
    assert messages[0] == messages[1]
    # the buffer keeps working, without compiling anything for the bad batch
    for buffer in (rb, rb_eager):
        buffer.extend(make_batch(datatype, 30, 5))
        buffer.sample()
    assert counter.graphs == graphs
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize("datatype", ["tensor", "tensordict", "pytree"])
def test_empty_batch_is_a_noop(datatype, tmp_path):
    rb, rb_eager, counter = _make_buffers(LazyTensorStorage, tmp_path)
    for buffer in (rb, rb_eager):
        assert buffer.extend(make_batch(datatype, 0, 0)).numel() == 0
        assert len(buffer) == 0 and not buffer.storage.initialized
        buffer.extend(make_batch(datatype, 30, 1))
        buffer.extend(make_batch(datatype, 30, 2))
        before = _snapshot(buffer)
        assert buffer.extend(make_batch(datatype, 0, 3)).numel() == 0
        after = _snapshot(buffer)
        assert before[:3] == after[:3]
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize("datatype", ["tensor", "tensordict", "pytree"])
def test_batch_larger_than_capacity_keeps_the_last(datatype, tmp_path):
    # as if the rows had been added one at a time: the last 100 of 250 remain
    rb, rb_eager, counter = _make_buffers(LazyTensorStorage, tmp_path)
    for buffer in (rb, rb_eager):
        buffer.extend(make_batch(datatype, 30, 0))
        buffer.extend(make_batch(datatype, 30, 1))
        index = buffer.extend(make_batch(datatype, 250, 2))
        assert index.shape == (250,)
        assert len(buffer) == 100 and buffer._writer._cursor == (60 + 250) % 100
        obs = leaves(buffer[:])[0]
        # make_batch(step=2) writes obs[i] = 2 + i; slot (60 + i) % 100 keeps the last i
        slots = (60 + torch.arange(150, 250)) % 100
        assert (obs[slots, 0] == 2 + torch.arange(150, 250)).all()
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_sample_from_empty_buffer(compile):
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=4, compile=compile)
    with pytest.raises(RuntimeError, match="Cannot sample from an empty storage"):
        rb.sample()
    rb.extend(torch.ones(3, 2))
    rb.sample()
    rb.empty()
    with pytest.raises(RuntimeError, match="Cannot sample from an empty storage"):
        rb.sample()
    rb.extend(torch.ones(3, 2))
    assert rb.sample().shape == (4, 2)


def test_tensordict_replay_buffer_index_key(tmp_path):
    # TensorDictReplayBuffer writes "index" into the tensordicts it samples;
    # extending with a sample is accepted, in both modes
    rb, rb_eager, counter = _make_buffers(
        LazyTensorStorage, tmp_path, TensorDictReplayBuffer
    )
    for buffer in (rb, rb_eager):
        buffer.extend(make_batch("tensordict", 30, 0))
        buffer.extend(make_batch("tensordict", 30, 1))
    sample = rb_eager.sample()
    assert "index" in sample.keys()
    for buffer in (rb, rb_eager):
        buffer.extend(sample.clone())
        assert len(buffer) == 68
    assert_same_buffer(rb, rb_eager)


def test_empty_batch_is_not_checked(tmp_path):
    # nothing to write, so nothing to check: eager and compiled agree
    rb, rb_eager, counter = _make_buffers(LazyTensorStorage, tmp_path)
    for buffer in (rb, rb_eager):
        buffer.extend(make_batch("tensordict", 30, 1))
        buffer.extend(make_batch("tensordict", 30, 2))
        empty = make_batch("tensordict", 0, 3)
        empty["extra"] = torch.zeros(0)
        assert buffer.extend(empty).numel() == 0
    assert_same_buffer(rb, rb_eager)


@pytest.mark.series(
    "main", reason="v0.6.0 refuses keys that a locked storage does not hold"
)
def test_extra_key_locked(tmp_path):
    # main drops the keys that a locked (memory-mapped, shared) storage does not
    # hold, such as a policy's extra outputs: eager and compiled alike, the
    # rows are written without them
    rb, rb_eager, counter = _make_buffers(LazyMemmapStorage, tmp_path)
    for step in range(4):
        for buffer in (rb, rb_eager):
            buffer.extend(make_batch("tensordict", 30, step))
    for buffer in (rb, rb_eager):
        buffer.extend(make_batch("tensordict", 10, 9).set("extra", torch.zeros(10)))
        assert "extra" not in buffer[:].keys()
    assert_same_buffer(rb, rb_eager)
