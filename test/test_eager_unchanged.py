"""Without compile, the buffer behaves as at torchrl v0.6.0: shared counters, locks, checkpoints."""
from __future__ import annotations

import json
import multiprocessing.synchronize
import pickle
from multiprocessing.sharedctypes import Synchronized

import torch
from conftest import make_batch, WRITER_STATE
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer


def test_counters_stay_shared_values():
    rb = ReplayBuffer(storage=LazyTensorStorage(10))
    rb.extend(torch.ones(4, 2))
    assert rb._compiled_write is None and rb._compiled_read is None
    assert isinstance(rb._storage._len_value, Synchronized)
    assert isinstance(rb._writer._cursor_value, Synchronized)
    assert isinstance(rb._writer._write_count_value, Synchronized)
    assert type(rb._replay_lock).__name__ == "RLock"
    rb.share()
    assert isinstance(rb._write_lock, multiprocessing.synchronize.Lock)


def test_checkpoint_format(tmp_path):
    rb = ReplayBuffer(storage=LazyMemmapStorage(10, scratch_dir=tmp_path / "s"))
    rb.extend(make_batch("tensordict", 13, 0))
    state_dict = rb.state_dict()
    assert state_dict["_storage"]["_len"] == 10
    assert state_dict["_writer"] == WRITER_STATE(cursor=3, write_count=13)
    rb.dumps(tmp_path / "ckpt")
    metadata = json.loads((tmp_path / "ckpt" / "writer" / "metadata.json").read_text())
    assert metadata == {
        key.lstrip("_"): value
        for key, value in WRITER_STATE(cursor=3, write_count=13).items()
    }
    rb_load = ReplayBuffer(storage=LazyMemmapStorage(10, scratch_dir=tmp_path / "l"))
    rb_load.loads(tmp_path / "ckpt")
    assert len(rb_load) == 10 and rb_load._writer._cursor == 3
    assert (rb_load[:]["obs"] == rb[:]["obs"]).all()


def test_pickle_keeps_eager_mode():
    # a storage pickles its length as an int and unpickles it as a shared value
    storage = LazyTensorStorage(10)
    storage.set(torch.arange(4), torch.ones(4, 2))
    storage = pickle.loads(pickle.dumps(storage))
    assert isinstance(storage._len_value, Synchronized)
    assert len(storage) == 4 and not storage._compilable
    assert (storage.get(torch.arange(4)) == 1).all()


def test_prioritized_buffer_with_or_without_the_extension():
    # a prioritized buffer works in eager mode whether torchrl's C++ extension loads
    # or not (it does not in a wheel base): with it, the sampler keeps the C++
    # segment trees; without it, it uses the series' torch-op trees (main patch 14,
    # v0.6.0 patch 9), and samples item i with probability q_i / sum(q),
    # q = (p + eps) ** alpha, either way
    import numpy as np
    from torchrl.data import PrioritizedReplayBuffer

    try:
        import torchrl._torchrl  # noqa: F401

        has_extension = True
    except ImportError:
        has_extension = False
    alpha, num_items = 0.7, 20
    rb = PrioritizedReplayBuffer(
        alpha=alpha, beta=0.5, storage=LazyTensorStorage(num_items), batch_size=4000
    )
    rb.extend(torch.arange(num_items))
    priority = torch.arange(1, num_items + 1, dtype=torch.float)
    rb.update_priority(torch.arange(num_items), priority)
    tree_type = type(rb._sampler._sum_tree).__name__
    assert (tree_type == "_TensorSegmentTree") == (not has_extension), tree_type
    np.random.seed(0)
    counts = torch.zeros(num_items)
    for _ in range(25):
        counts += torch.bincount(rb.sample(), minlength=num_items)
    q = (priority + rb._sampler._eps) ** alpha
    expected = q / q.sum() * counts.sum()
    # chi-square with 19 degrees of freedom: 43.8 is its 0.999 quantile
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 43.8, (chi2, counts, expected)
