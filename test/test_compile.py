"""ReplayBuffer(compile=...): extend and sample compile once, with no graph break."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import (
    assert_same_buffer,
    assert_same_priorities,
    assert_valid_index,
    GraphCounter,
    leaves,
    make_batch,
    TORCH_2_6,
    WRITER_STATE,
)
from rb_compile_cases import (
    Combination,
    expected_host_syncs,
    FullgraphRun,
    host_sync_misses,
    make_component,
    make_rollout,
    matrix_combinations,
    MatrixRun,
    outside_matrix,
    run_compiled,
    run_fullgraph,
    sample_problems,
    SERIES,
    SHORT_BATCH_ERROR,
    SUPPORTED,
    WEIGHT_KEY,
)
from tensordict import TensorDict
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    ListStorage,
    PrioritizedReplayBuffer,
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

MAX_SIZE = 100
BATCH = 30  # does not divide MAX_SIZE: the cursor wraps at a new place each lap
CALLS = 20

CASES = [
    # buffer, storage, writer, datatype
    (ReplayBuffer, LazyTensorStorage, RoundRobinWriter, "tensor"),
    (ReplayBuffer, LazyTensorStorage, RoundRobinWriter, "tensordict"),
    (ReplayBuffer, LazyTensorStorage, RoundRobinWriter, "pytree"),
    (ReplayBuffer, LazyMemmapStorage, RoundRobinWriter, "tensordict"),
    (ReplayBuffer, TensorStorage, RoundRobinWriter, "tensordict"),
    (ReplayBuffer, TensorStorage, RoundRobinWriter, "pytree"),
    (
        TensorDictReplayBuffer,
        LazyTensorStorage,
        TensorDictRoundRobinWriter,
        "tensordict",
    ),
]


def case_id(case):
    buffer, storage, writer, datatype = case
    prefix = "" if buffer is ReplayBuffer else f"{buffer.__name__}-"
    return f"{prefix}{storage.__name__}-{writer.__name__}-RandomSampler-{datatype}"


def make_storage(storage_type, datatype, tmp_path):
    if storage_type is LazyMemmapStorage:
        return LazyMemmapStorage(MAX_SIZE, scratch_dir=tmp_path)
    if storage_type is TensorStorage:
        # preallocated with the layout of the batches
        template = make_batch(datatype, MAX_SIZE, 0)
        if datatype == "pytree":
            return TensorStorage(
                torch.utils._pytree.tree_map(torch.zeros_like, template)
            )
        return TensorStorage(template.zero_())
    return storage_type(MAX_SIZE)


def make_pair(case, tmp_path, compile):
    """A buffer compiled as asked, and the same buffer in eager mode."""
    buffer, storage, writer, datatype = case
    rb = buffer(
        storage=make_storage(storage, datatype, tmp_path / "compiled"),
        writer=writer(),
        batch_size=16,
        compile=compile,
    )
    rb_eager = buffer(
        storage=make_storage(storage, datatype, tmp_path / "eager"),
        writer=writer(),
        batch_size=16,
    )
    return rb, rb_eager


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_extend_recompile(case, tmp_path):
    counter = GraphCounter()
    rb, rb_eager = make_pair(case, tmp_path, {"backend": counter})
    datatype = case[3]
    for step in range(CALLS):
        index = rb.extend(make_batch(datatype, BATCH, step))
        index_eager = rb_eager.extend(make_batch(datatype, BATCH, step))
        assert (index == index_eager).all()
        # the first write runs eagerly, every later one in the one graph
        assert counter.graphs == (step > 0)
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sample_recompile(case, tmp_path):
    counter = GraphCounter()
    rb, _ = make_pair(case, tmp_path, {"backend": counter})
    datatype = case[3]
    rb.extend(make_batch(datatype, BATCH, 0))
    rb.sample()
    assert counter.graphs == 0  # the first write and the first sample run eagerly
    for step in range(CALLS):
        rb.extend(make_batch(datatype, BATCH, step + 1))
        sample, info = rb.sample(return_info=True)
        index = info["index"]
        assert index.shape == (16,)
        assert ((index >= 0) & (index < len(rb))).all()
        expected = rb[index]
        if isinstance(rb, TensorDictReplayBuffer):
            assert (sample["index"] == index).all()
            sample, expected = sample.exclude("index"), expected.exclude("index")
        for x, y in zip(leaves(sample), leaves(expected)):
            assert (x == y).all()
    assert counter.graphs == 2


def test_sample_uniform():
    # compiled sampling draws every stored item, and only stored items
    rb = ReplayBuffer(
        storage=LazyTensorStorage(MAX_SIZE), compile={"backend": GraphCounter()}
    )
    rb.extend(torch.arange(37.0))
    counts = torch.zeros(MAX_SIZE)
    for _ in range(200):
        counts += torch.bincount(rb.sample(64).long(), minlength=MAX_SIZE)
    assert (counts[:37] > 0).all() and (counts[37:] == 0).all()
    # 12800 draws over 37 items: each count is within 6 sigmas of 346
    expected = 200 * 64 / 37
    assert ((counts[:37] - expected).abs() < 6 * expected**0.5).all()


@pytest.mark.parametrize("datatype", ["tensor", "tensordict", "pytree"])
def test_compiled_step_fullgraph(datatype):
    # the buffer, built empty, traced within the user's own fullgraph compile
    counter = GraphCounter()
    rb = ReplayBuffer(storage=LazyTensorStorage(MAX_SIZE), compile=True)
    rb_eager = ReplayBuffer(storage=LazyTensorStorage(MAX_SIZE))

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        return rb.sample(16)

    graphs = []
    for i in range(CALLS):
        sample = step(make_batch(datatype, BATCH, i))
        rb_eager.extend(make_batch(datatype, BATCH, i))
        assert leaves(sample)[0].shape[0] == 16
        graphs.append(counter.graphs)
    # the first call initializes the storage: one recompilation, then none
    assert graphs[1] <= 2 and graphs[-1] == graphs[1]
    assert_same_buffer(rb, rb_eager)


def test_extend_dynamic_batch_size():
    # a collector's last, shorter batch: one more compilation, with dynamic shapes
    counter = GraphCounter()
    rb = ReplayBuffer(storage=LazyTensorStorage(MAX_SIZE), compile={"backend": counter})
    rb_eager = ReplayBuffer(storage=LazyTensorStorage(MAX_SIZE))
    # sizes 0 and 1 are specialized by dynamo: a batch of 1 compiles a graph of its own
    for step, size in enumerate([30, 30, 17, 30, 23, 5, 30, 11, 30, 29, 2]):
        rb.extend(make_batch("tensordict", size, step))
        rb_eager.extend(make_batch("tensordict", size, step))
    assert counter.graphs == 2
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize("sampler", sorted(SUPPORTED["sampler"]))
def test_sample_dynamic_batch_size(sampler):
    # batch sizes that change from call to call: one more compilation, where
    # the batch size is dynamic, then none; the samples are the storage's
    counter = GraphCounter()
    rb = ReplayBuffer(
        storage=LazyTensorStorage(MAX_SIZE),
        sampler=make_component("sampler", sampler, MAX_SIZE),
        compile={"backend": counter},
    )
    for step in range(3):
        rb.extend(make_batch("tensordict", BATCH, step))
    varies = SERIES == "main" and sampler == "SliceSamplerWithoutReplacement"
    for batch_size in [16, 16, 24, 8, 32, 12, 20]:  # slices of 4 steps
        try:
            sample, info = rb.sample(batch_size, return_info=True)
        except RuntimeError as error:
            # a batch of short trajectories only, as eager mode fails on it
            assert varies and SHORT_BATCH_ERROR in str(error)
            continue
        if varies:
            # as in eager mode, the slices of short trajectories are dropped and
            # a batch ends with its epoch (main patch 29)
            assert sample.shape[0] % 4 == 0 and 0 < sample.shape[0] <= batch_size
        else:
            assert sample.shape == (batch_size,)
        assert_valid_index(info["index"], rb)
        for x, y in zip(leaves(sample), leaves(rb[info["index"]])):
            assert (x == y).all()
    # extend (once compiled, then run again) and sample: 2 graphs for sample
    assert counter.graphs == 3


def run_inductor_reference(compile=True):
    """The reference case with compile= (by default, the default backend): its samples
    are what the buffer holds, and it ends up holding what an eager twin holds."""
    rb = ReplayBuffer(
        storage=LazyTensorStorage(MAX_SIZE), batch_size=16, compile=compile
    )
    rb_eager = ReplayBuffer(storage=LazyTensorStorage(MAX_SIZE))
    for step in range(6):
        rb.extend(make_batch("tensordict", BATCH, step))
        rb_eager.extend(make_batch("tensordict", BATCH, step))
        sample, info = rb.sample(return_info=True)
        for x, y in zip(leaves(sample), leaves(rb[info["index"]])):
            assert (x == y).all()
    assert_same_buffer(rb, rb_eager)


def test_inductor():
    run_inductor_reference()


def test_max_value_writer_inductor():
    # the default backend on the writer's insertion loop (a while_loop): it
    # lowers, and keeps the elements, slots and indices that eager mode keeps
    combination = Combination(
        "TensorDictReplayBuffer",
        "LazyTensorStorage",
        1,
        "TensorDictMaxValueWriter",
        "RandomSampler",
    )
    rb, rb_eager = combination.build(True), combination.build(False)
    for step in range(6):
        batch = combination.batch(step)
        assert (rb.extend(batch.clone()) == rb_eager.extend(batch.clone())).all()
        sample, info = rb.sample(return_info=True)
        assert not sample_problems(rb, sample, info)
    assert_same_buffer(rb, rb_eager)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        [lambda: {"storage": ListStorage(10)}, "storage=ListStorage"],
        [
            lambda: {
                "storage": LazyTensorStorage(10, ndim=2),
                "writer": TensorDictMaxValueWriter(),
            },
            "not compatible with storages with more than one dimension",
        ],
        pytest.param(
            lambda: {
                "storage": LazyTensorStorage(10),
                "sampler": PrioritizedSliceSampler(
                    10, 0.7, 0.5, num_slices=2, strict_length=False
                ),
            },
            r"sampler=PrioritizedSliceSampler \(with strict_length=False;",
            marks=pytest.mark.series(
                "v0.6.0",
                reason="main patch 25 compiles it: slices cut at trajectory ends",
            ),
        ),
        pytest.param(
            lambda: {
                "storage": LazyTensorStorage(10),
                "sampler": SliceSamplerWithoutReplacement(
                    num_slices=2, strict_length=False
                ),
            },
            r"sampler=SliceSamplerWithoutReplacement \(with strict_length=False;",
            marks=pytest.mark.series(
                "v0.6.0",
                reason="main patch 24 compiles it: slices cut at trajectory ends",
            ),
        ),
        pytest.param(
            lambda: {
                "storage": LazyTensorStorage(10),
                "sampler": SliceSampler(num_slices=2, strict_length=False),
            },
            r"sampler=SliceSampler \(with strict_length=False; expected",
            marks=pytest.mark.series(
                "v0.6.0", reason="main compiles slices cut at trajectory ends"
            ),
        ),
        [
            lambda: {"storage": LazyTensorStorage(10), "prefetch": 2, "batch_size": 2},
            "prefetch",
        ],
    ],
    ids=[
        "ListStorage",
        "MaxValueWriter-ndim2",
        "PrioritizedSliceSampler-not-strict",
        "SliceSamplerWithoutReplacement-not-strict",
        "SliceSampler-not-strict",
        "prefetch",
    ],
)
def test_refuses_unsupported(kwargs, match):
    # (the components are built by the test, with the C++ trees or, without the
    # extension, the torch-op ones of main patch 14 and v0.6.0 patch 9)
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(compile=True, **kwargs())


@pytest.mark.parametrize("component", list(outside_matrix()))
def test_refuses_outside_matrix(component):
    # main's other samplers, writers and buffers: refused at construction, with the
    # component named and what compile= expects instead
    with pytest.raises(ValueError, match=r"does not support .*\(expected a") as info:
        outside_matrix()[component]()
    assert component.split(" ")[0] in str(info.value)


def test_sample_empty():
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=2, compile=True)
    with pytest.raises(RuntimeError, match="empty storage"):
        rb.sample()
    rb.extend(torch.ones(3, 2))
    rb.empty()
    with pytest.raises(RuntimeError, match="empty storage"):
        rb.sample()


def test_checkpoint_round_trip():
    # state_dict keeps plain integers; loading and unpickling keep the compile mode
    counter = GraphCounter()
    rb = ReplayBuffer(storage=LazyTensorStorage(10), compile={"backend": counter})
    rb.extend(torch.arange(13.0))
    state_dict = rb.state_dict()
    assert state_dict["_storage"]["_len"] == 10
    assert state_dict["_writer"] == WRITER_STATE(cursor=3, write_count=13)
    rb_load = ReplayBuffer(storage=LazyTensorStorage(10), compile={"backend": counter})
    rb_load.load_state_dict(state_dict)
    assert len(rb_load) == 10 and rb_load._writer._cursor == 3
    assert (rb_load[:] == rb[:]).all()
    rb_copy = pickle.loads(pickle.dumps(rb))
    assert rb_copy._compiled_write is not None
    assert len(rb_copy) == 10 and rb_copy._writer._cursor == 3
    rb_copy.extend(torch.arange(2.0))
    assert rb_copy._writer._cursor == 5 and rb._writer._cursor == 3


# The whole matrix: every storage (ndim 1, 2) x writer x sampler with ReplayBuffer
# and TensorDictReplayBuffer, and every storage with the prioritized buffers
# (rb_compile_cases.matrix_combinations). Each one compiles or is refused.
MATRIX = matrix_combinations()
COMPILED_MATRIX = [c for c in MATRIX if c.supported]
REFUSED_MATRIX = [c for c in MATRIX if not c.supported]


@pytest.mark.parametrize("combination", REFUSED_MATRIX, ids=lambda c: c.name)
def test_matrix_refuses(combination):
    # refused at construction, with a ValueError naming each component not covered
    with pytest.raises(ValueError) as err:
        combination.build(True)
    message = str(err.value)
    if combination.writer == "TensorDictMaxValueWriter" and combination.ndim > 1:
        # impossible at the base already: the same error with or without compile
        with pytest.raises(ValueError) as eager_err:
            combination.build(False)
        assert str(eager_err.value) == message
        return
    combination.build(False)  # eager mode takes it
    assert "compile=...) does not support" in message
    for kind in ("storage", "writer", "sampler"):
        name = getattr(combination, kind)
        if name not in SUPPORTED[kind]:
            assert f"{kind}={name}" in message


@pytest.mark.parametrize("combination", COMPILED_MATRIX, ids=lambda c: c.name)
def test_matrix_compiles_once(combination):
    # built empty with compile=: 20 extends that wrap past capacity, 20 samples
    # (and 20 update_priority calls) compile one graph each, with no graph break;
    # interleaving them compiles nothing more; every sample holds the stored
    # values at its index, and contents, writer state (and priorities) are eager's
    # (compile_report.py --full checks its matrix rows with the same misses)
    run = run_compiled(combination)
    assert not run.misses(combination.prioritized), run


@pytest.mark.parametrize("combination", COMPILED_MATRIX, ids=lambda c: c.name)
def test_matrix_fullgraph_step(combination):
    # within the user's torch.compile(step, fullgraph=True) calling extend, sample
    # (and update_priority): it compiles, at most once more (the first call
    # initializes a lazy storage), then never; same buffer as eager
    # (when extended before, nothing is left to initialize within the graph)
    run = run_fullgraph(combination)
    misses = run.misses()
    assert not misses, misses


def _item(x):
    # an item used as a size; torch folds a float item that only scales a tensor
    # back into tensor ops, and reads nothing then
    return torch.ones(x.abs().sum().long().item())


def _nonzero(x):
    return x.nonzero()


def _mask(x):
    return x[x > 0]


def _cond(x):
    return torch.cond(x.sum() > 0, lambda x: x + 1, lambda x: x - 1, (x,))


def _while_loop(x):
    from torch._higher_order_ops.while_loop import while_loop

    return while_loop(
        lambda i, x: i < 3, lambda i, x: (i + 1, x * 2), (x[0].long() * 0, x)
    )


def _none(x):
    # plain tensor ops: nothing read on the host
    return torch.where(x > 0, x, 0).cumsum(0)[torch.randint(4, (2,))]


@pytest.mark.parametrize(
    "fn, expected",
    [
        (_item, ["aten._local_scalar_dense.default"]),
        (_nonzero, ["aten.nonzero.default"]),
        (_mask, ["aten.index.Tensor"]),  # a boolean mask: its count is read back
        (_cond, ["cond"]),
        (_while_loop, ["while_loop"]),
        (_none, []),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_host_syncs(fn, expected):
    # what the matrix's host-sync count rests on: each kind of host read is found
    # in the ATen graph, and plain tensor ops are not counted
    counter = GraphCounter("aot_eager")
    with torch._dynamo.config.patch(
        capture_scalar_outputs=True, capture_dynamic_output_shape_ops=True
    ):
        torch._dynamo.reset()
        torch.compile(fn, backend=counter, fullgraph=True)(torch.arange(-2.0, 2.0))
    assert counter.graphs == 1
    assert sorted(set(counter.host_syncs)) == expected, counter.host_syncs


def test_host_sync_misses():
    assert host_sync_misses(["sample: cond"], {"sample: cond"}) == []
    assert host_sync_misses(["extend: cond"], set()) == ["host sync in extend: cond"]
    assert host_sync_misses([], {"sample: cond"}) == [
        "no sample: cond any more: remove it from KNOWN_HOST_SYNCS"
    ]
    # a known sync of one component is not expected of another
    combination = Combination(
        "ReplayBuffer", "LazyTensorStorage", 1, "RoundRobinWriter", "RandomSampler"
    )
    assert expected_host_syncs(combination, "compile") == set()
    assert expected_host_syncs(
        Combination(
            "ReplayBuffer",
            "LazyTensorStorage",
            1,
            "TensorDictMaxValueWriter",
            "SamplerWithoutReplacement",
        ),
        "fullgraph",
    ) == {"step: while_loop", "step: cond"}


def test_expected_host_syncs_by_ndim():
    # main patch 36: compile='s read of a SliceSamplerWithoutReplacement on a storage
    # of one dim draws the next permutation before its graph (the trajectory index
    # counts the trajectories), so the matrix expects no cond in its sample graph;
    # with ndim=2 (the pass over the storage) and within the user's step, it does
    def syncs(ndim, where):
        combination = Combination(
            "ReplayBuffer",
            "LazyTensorStorage",
            ndim,
            "RoundRobinWriter",
            "SliceSamplerWithoutReplacement",
        )
        return expected_host_syncs(combination, where)

    assert "sample: cond" in syncs(2, "compile")
    assert ("sample: cond" in syncs(1, "compile")) == (SERIES == "v0.6.0")
    assert all("step: cond" in syncs(ndim, "fullgraph") for ndim in (1, 2))


@pytest.mark.parametrize(
    "run, prioritized, miss",
    [
        (MatrixRun(1, 1), False, None),
        (MatrixRun(1, 1, 1), True, None),
        (MatrixRun(2, 1), False, "extend: 2 graphs, expected 1"),
        (MatrixRun(1, 0), False, "sample: 0 graphs, expected 1"),
        (MatrixRun(1, 1), True, "update_priority: None graphs, expected 1"),
        (MatrixRun(1, 1, 1), False, "update_priority: 1 graphs, expected None"),
        (MatrixRun(1, 1, more_graphs=1), False, "1 more graphs when interleaved"),
        (MatrixRun(1, 1, graph_breaks=3), False, "3 graph breaks"),
        (MatrixRun(1, 1, problems=["sample 2: bad"]), False, "sample 2: bad"),
        (FullgraphRun([1, 2, 2]), None, None),
        (FullgraphRun([1, 1, 1], extended_before=True), None, None),
        (FullgraphRun([1, 2, 2], extended_before=True), None, "[1, 2, 2]"),
        (FullgraphRun([1, 2, 3]), None, "[1, 2, 3]"),
        (FullgraphRun([2, 2, 2]), None, "[2, 2, 2]"),
        (FullgraphRun([1, 3, 3]), None, "[1, 3, 3]"),
        (FullgraphRun([1]), None, "[1]"),
        (FullgraphRun([1], error="Unsupported: x"), None, "Unsupported: x"),
        (FullgraphRun([1, 2, 2], problems=["step 1: bad"]), None, "step 1: bad"),
    ],
)
def test_run_misses(run, prioritized, miss):
    # what the matrix tests and the report's exit status rest on: each shortfall is
    # named, and a run that meets the goal has none
    misses = run.misses() if prioritized is None else run.misses(prioritized)
    if miss is None:
        assert misses == []
    else:
        assert len(misses) == 1 and miss in misses[0], misses


def test_memmap_fullgraph_needs_one_extend(tmp_path):
    # an empty LazyMemmapStorage would create its files within the graph: the
    # error says to extend the buffer once before, and nothing is written
    rb = ReplayBuffer(
        storage=LazyMemmapStorage(MAX_SIZE, scratch_dir=tmp_path), compile=True
    )

    @torch.compile(backend=GraphCounter(), fullgraph=True)
    def step(batch):
        rb.extend(batch)
        return rb.sample(16)

    # (torch<2.6 shows no reason, only the function that makes the files)
    reason = "extend the buffer once before" if TORCH_2_6 else "_init_outside_graph"
    with pytest.raises(Exception, match=reason):
        step(make_batch("tensordict", BATCH, 0))
    assert len(rb) == 0 and not rb.storage.initialized
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("within_buffer", [False, True], ids=["max-ever", "max-within"])
@pytest.mark.parametrize("datatype", ["tensor", "tensordict", "pytree"])
def test_prioritized_matches_eager(datatype, within_buffer):
    counter = GraphCounter()

    def make(compile):
        sampler = PrioritizedSampler(
            MAX_SIZE, 0.7, 0.5, max_priority_within_buffer=within_buffer
        )
        return ReplayBuffer(
            storage=LazyTensorStorage(MAX_SIZE), sampler=sampler, compile=compile
        )

    rb, rb_eager = make({"backend": counter}), make(False)
    for step in range(CALLS):
        rb.extend(make_batch(datatype, BATCH, step))
        rb_eager.extend(make_batch(datatype, BATCH, step))
        index = rb.sample(16, return_info=True)[1]["index"]
        # a repeated index (the last priority wins) and a -1 (skipped)
        index = torch.cat([index, index[:3], torch.tensor([-1])])
        priority = torch.rand(index.shape) * (step + 1)
        rb.update_priority(index, priority)
        rb_eager.update_priority(index, priority)
        assert_same_priorities(rb, rb_eager)
    assert_same_buffer(rb, rb_eager)
    assert counter.graphs == 3  # extend, sample, update_priority


@pytest.mark.skipif(
    SERIES != "main",
    reason="main patch 30; the v0.6.0 series compiles one graph per form",
)
def test_update_priority_forms_compile_once():
    # the forms a training loop gives update_priority: a TD error in float64, as a
    # column, strided, not detached, one priority for all, an index as a list;
    # TensorDictReplayBuffer's update_tensordict_priority on a sample without the
    # priority key (an expanded default priority). One graph for them all, and one
    # more for another number of elements (the dynamic graph), as eager mode's
    # trees and max priority.
    counter = GraphCounter()

    def make(compile):
        sampler = PrioritizedSampler(MAX_SIZE, 0.7, 0.5)
        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(MAX_SIZE),
            sampler=sampler,
            priority_key="td_error",
            compile=compile,
        )

    rb, rb_eager = make({"backend": counter}), make(False)
    for step in range(3):
        rb.extend(make_batch("tensordict", BATCH, step))
        rb_eager.extend(make_batch("tensordict", BATCH, step))
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(MAX_SIZE, generator=generator)[:16] % len(rb)
    error = torch.rand(32, 1, generator=generator, dtype=torch.float64)
    before = counter.graphs
    forms = [
        (index, error[:16, 0].float()),
        (index, error[:16]),
        (index, error[::2, 0]),
        (index, error[:16, 0].float().requires_grad_()),
        (index, 0.25),
        (index.tolist(), error[16:, 0]),
    ]
    for form_index, priority in forms:
        rb.update_priority(form_index, priority)
        rb_eager.update_priority(form_index, priority)
        assert_same_priorities(rb, rb_eager, exact=False)
    assert counter.graphs == before + 1
    sample = TensorDict({"index": index}, [16])
    rb.update_tensordict_priority(sample)
    rb_eager.update_tensordict_priority(sample)
    assert_same_priorities(rb, rb_eager, exact=False)
    assert counter.graphs == before + 1
    for size in (5, 9):
        rb.update_priority(index[:size], error[:size, 0])
        rb_eager.update_priority(index[:size], error[:size, 0])
        assert_same_priorities(rb, rb_eager, exact=False)
    assert counter.graphs == before + 2


@pytest.mark.skipif(
    SERIES != "main",
    reason="main patch 31; the v0.6.0 series passes one dict to each torch.compile",
)
def test_compile_kwargs_reach_every_path():
    # torch.compile pops guard_filter_fn out of its options: each compiled path
    # (extend, sample, update_priority) still gets it, and the user's dict keeps it
    counter = GraphCounter()
    filtered = []

    def guard_filter_fn(entries):
        filtered.append(len(entries))
        return [True] * len(entries)

    options = {"guard_filter_fn": guard_filter_fn}
    compile = {"backend": counter, "options": options}
    rb = PrioritizedReplayBuffer(
        alpha=0.7,
        beta=0.5,
        storage=LazyTensorStorage(MAX_SIZE),
        batch_size=16,
        compile=compile,
    )
    for step in range(4):
        rb.extend(make_batch("tensordict", BATCH, step))
        _, info = rb.sample(return_info=True)
        rb.update_priority(info["index"], torch.rand(16))
    assert counter.graphs == 3
    assert len(filtered) == counter.graphs
    assert compile == {"backend": counter, "options": options}
    assert options == {"guard_filter_fn": guard_filter_fn}
    SliceSampler(num_slices=2, compile=compile)
    assert options == {"guard_filter_fn": guard_filter_fn}


@pytest.mark.skipif(
    SERIES != "main", reason="main patch 32; the v0.6.0 series keeps inductor's asserts"
)
@pytest.mark.parametrize(
    "compile,asserts",
    [(True, False), ({"options": {"size_asserts": True}}, True)],
    ids=["default", "asked-for"],
)
def test_inductor_size_asserts(compile, asserts, monkeypatch):
    # inductor's size asserts repeat dynamo's guards at every call: compile= leaves
    # them out unless its options ask for them, and agrees with eager mode either way
    from torch._inductor.utils import run_and_get_code

    monkeypatch.delenv("TORCHINDUCTOR_SIZE_ASSERTS", raising=False)
    _, codes = run_and_get_code(run_inductor_reference, compile)
    assert len(codes) == 2  # extend and sample
    assert [("assert_size_stride(" in code) for code in codes] == [asserts] * 2


def test_prioritized_distribution():
    # item i drawn with probability p_i ** alpha / sum(p ** alpha), weights (p_i / p_min) ** -beta
    alpha, beta, items, draws = 0.7, 0.5, 20, 100 * 256
    rb = PrioritizedReplayBuffer(
        alpha=alpha,
        beta=beta,
        storage=LazyTensorStorage(MAX_SIZE),
        batch_size=256,
        compile={"backend": GraphCounter()},
    )
    rb.extend(torch.arange(float(items)))
    priority = torch.arange(1.0, items + 1)
    rb.update_priority(torch.arange(items), priority)
    counts = torch.zeros(MAX_SIZE)
    for _ in range(draws // 256):
        sample, info = rb.sample(return_info=True)
        assert (sample == info["index"]).all()
        counts += torch.bincount(info["index"], minlength=MAX_SIZE)
        p = (priority[info["index"]] + 1e-8) ** alpha
        torch.testing.assert_close(info[WEIGHT_KEY], (p / (1 + 1e-8) ** alpha) ** -beta)
    assert (counts[items:] == 0).all()
    expected = draws * priority**alpha / (priority**alpha).sum()
    assert ((counts[:items] - expected).abs() < 6 * expected.sqrt()).all()


@pytest.mark.parametrize(
    "sampler",
    [
        "PrioritizedSampler",
        "PrioritizedSliceSampler",
    ],
)
@pytest.mark.parametrize("buffer", [ReplayBuffer, TensorDictReplayBuffer])
def test_prioritized_fullgraph_step(buffer, sampler):
    # extend, sample and update_priority within the user's fullgraph compile
    counter = GraphCounter()

    def make(compile):
        return buffer(
            storage=LazyTensorStorage(MAX_SIZE),
            sampler=make_component("sampler", sampler, MAX_SIZE),
            compile=compile,
        )

    rb, rb_eager = make(True), make(False)

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        sample, info = rb.sample(16, return_info=True)
        rb.update_priority(info["index"], sample["obs"][:, 0] + 1)
        return sample, info

    graphs = []
    for i in range(CALLS):
        sample, info = step(make_batch("tensordict", BATCH, i))
        rb_eager.extend(make_batch("tensordict", BATCH, i))
        rb_eager.update_priority(info["index"], sample["obs"][:, 0] + 1)
        graphs.append(counter.graphs)
    # the first call initializes the storage: one recompilation, then none
    assert graphs[1] <= 2 and graphs[-1] == graphs[1]
    assert_same_buffer(rb, rb_eager)
    assert_same_priorities(rb, rb_eager)


@pytest.mark.slow
def test_prioritized_inductor():
    # the default backend on the prioritized path: it lowers (no item() in the
    # graph) and agrees with eager
    def make(compile):
        return ReplayBuffer(
            storage=LazyTensorStorage(MAX_SIZE),
            sampler=PrioritizedSampler(MAX_SIZE, alpha=0.7, beta=0.5),
            batch_size=16,
            compile=compile,
        )

    from torch._inductor.utils import run_and_get_code

    rb, rb_eager = make(True), make(False)

    def run():
        for step in range(4):
            rb.extend(make_batch("tensordict", BATCH, step))
            rb_eager.extend(make_batch("tensordict", BATCH, step))
            sample, info = rb.sample(return_info=True)
            assert (sample["obs"] == rb[info["index"]]["obs"]).all()
            rb.update_priority(info["index"], torch.arange(16.0) + step)
            rb_eager.update_priority(info["index"], torch.arange(16.0) + step)

    _, codes = run_and_get_code(run)
    assert_same_buffer(rb, rb_eager)
    assert_same_priorities(rb, rb_eager, exact=False)
    if SERIES == "main":
        # main patches 33 and 34: the trees go up a level with a shift, not an
        # integer division per element, and sort the indices once per
        # update_priority (for both trees), not at all for new entries
        assert len(codes) == 3  # extend, sample, update_priority
        assert not any("floor_divide" in code for code in codes)
        assert sorted(code.count("aten.sort.stable(") for code in codes) == [0, 0, 1]


def fullgraph_index_fns(rb, backend):
    """Two functions of the user's, compiled with fullgraph=True: extend then sample, and
    sample alone; both return the sampled index."""

    @torch.compile(backend=backend, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        return rb.sample(return_info=True)[1]["index"]

    @torch.compile(backend=backend, fullgraph=True)
    def sample():
        return rb.sample(return_info=True)[1]["index"]

    return step, sample


def epochs_of(index, items, per_epoch):
    """The stream of sampled indices cut into epochs, and whether each samples every index once."""
    index = index[: index.numel() // per_epoch * per_epoch].reshape(-1, per_epoch)
    once = [
        bool((epoch.unique().numel() == per_epoch) & (epoch < items).all())
        for epoch in index
    ]
    return index, once


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
@pytest.mark.parametrize(
    "buffer,datatype",
    [
        (ReplayBuffer, "tensor"),
        (ReplayBuffer, "tensordict"),
        (ReplayBuffer, "pytree"),
        (TensorDictReplayBuffer, "tensordict"),
    ],
)
def test_without_replacement_epochs(buffer, datatype, drop_last):
    # a full buffer sampled over epochs: each epoch samples every item once,
    # every batch has the same size, and the sample holds the sampled rows
    counter = GraphCounter()
    items, sample_size = 90, 16  # 16 does not divide 90: batches straddle epochs
    rb = buffer(
        storage=LazyTensorStorage(MAX_SIZE),
        sampler=SamplerWithoutReplacement(drop_last=drop_last),
        batch_size=sample_size,
        compile={"backend": counter},
    )
    rb.extend(make_batch(datatype, items, 0))
    indices = []
    for _ in range(4 * items // sample_size):
        sample, info = rb.sample(return_info=True)
        for x, y in zip(leaves(sample), leaves(rb[info["index"]])):
            assert x.shape[0] == sample_size and (x == y).all()
        indices.append(info["index"])
    per_epoch = items // sample_size * sample_size if drop_last else items
    epochs, once = epochs_of(torch.cat(indices), items, per_epoch)
    assert len(epochs) >= 3 and all(once)
    assert counter.graphs == 1  # sample; the only extend ran eagerly


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
def test_without_replacement_fullgraph_inductor(drop_last):
    # the default backend, within the user's fullgraph step: the permutations
    # are drawn inside the graph (torch.cond); same indices as the eager backend
    def run(backend):
        torch.manual_seed(0)
        torch._dynamo.reset()
        rb = ReplayBuffer(
            storage=LazyTensorStorage(50),
            sampler=SamplerWithoutReplacement(drop_last=drop_last),
            batch_size=8,
            compile=True,
        )
        step, sample = fullgraph_index_fns(rb, backend)
        indices = [step(torch.arange(10.0) + 10 * i) for i in range(5)]
        # the buffer is full from the fifth call: its permutation starts there
        return torch.cat(indices[4:] + [sample() for _ in range(30)])

    index = run("inductor")
    assert (index == run("eager")).all()
    per_epoch = 48 if drop_last else 50
    epochs, once = epochs_of(index, 50, per_epoch)
    assert len(epochs) >= 4 and all(once)


@pytest.mark.series("main", reason="found and fixed on main (main patch 28)")
@pytest.mark.parametrize("sampler_type", [SamplerWithoutReplacement, SliceSampler])
def test_inductor_buffers_of_other_capacities(sampler_type):
    # main patch 28: buffers of other capacities in one process compile the same
    # code, which dynamo then traces with their capacity as a symbol; inductor's
    # code for SamplerWithoutReplacement used it without binding it (NameError:
    # name 's35' is not defined). Each buffer samples what it stores.
    torch._dynamo.reset()
    for capacity in (200, 48, 40):
        rb = ReplayBuffer(
            storage=LazyTensorStorage(capacity),
            sampler=sampler_type(
                **({"num_slices": 2} if sampler_type is SliceSampler else {})
            ),
            batch_size=8,
            compile=True,
        )
        for step in range(3):
            batch = lap_of_trajectories(1, step, "episode")
            rb.extend(batch)
            sample, info = rb.sample(return_info=True)
            assert_valid_index(info["index"], rb)
            assert (sample["obs"] == rb.storage[info["index"]]["obs"]).all()


# Storages with ndim=2: each element of the storage is a step of ENVS environments,
# and a buffer extends along the steps (dim_extend=1) with batches of ENVS x steps,
# as a collector of ENVS environments gives them. A capacity of MAX_SIZE elements
# is MAX_SIZE // ENVS steps.
ENVS = 4
STEPS = 7  # does not divide the 25 steps: the cursor wraps at a new place each lap

NDIM2_CASES = [
    # buffer, storage, datatype
    (ReplayBuffer, LazyTensorStorage, "tensor"),
    (ReplayBuffer, LazyTensorStorage, "tensordict"),
    (ReplayBuffer, LazyTensorStorage, "pytree"),
    (ReplayBuffer, LazyMemmapStorage, "tensordict"),
    (ReplayBuffer, TensorStorage, "pytree"),
    (TensorDictReplayBuffer, LazyTensorStorage, "tensordict"),
]
NDIM2_SAMPLERS = [
    pytest.param(RandomSampler, id="RandomSampler"),
    pytest.param(SamplerWithoutReplacement, id="SamplerWithoutReplacement"),
    pytest.param(PrioritizedSampler, id="PrioritizedSampler"),
]


def make_ndim2_buffer(case, sampler, compile, tmp_path=None, max_size=MAX_SIZE):
    buffer, storage_type, datatype = case
    if storage_type is TensorStorage:
        template = make_rollout(datatype, ENVS, max_size // ENVS, 0)
        template = torch.utils._pytree.tree_map(
            lambda leaf: torch.zeros_like(leaf.transpose(0, 1)), template
        )
        storage = TensorStorage(template, ndim=2)
    elif storage_type is LazyMemmapStorage:
        storage = LazyMemmapStorage(max_size, ndim=2, scratch_dir=tmp_path)
    else:
        storage = storage_type(max_size, ndim=2)
    if sampler is PrioritizedSampler:
        sampler = PrioritizedSampler(max_size, alpha=0.7, beta=0.5)
    else:
        sampler = sampler()
    writer = TensorDictRoundRobinWriter if buffer is TensorDictReplayBuffer else None
    return buffer(
        storage=storage,
        sampler=sampler,
        writer=writer() if writer else None,
        batch_size=16,
        compile=compile,
    )


def ndim2_id(case):
    buffer, storage, datatype = case
    prefix = "" if buffer is ReplayBuffer else f"{buffer.__name__}-"
    return f"{prefix}{storage.__name__}-{datatype}"


@pytest.mark.parametrize("sampler", NDIM2_SAMPLERS)
@pytest.mark.parametrize("case", NDIM2_CASES, ids=ndim2_id)
def test_ndim2_matches_eager(case, sampler, tmp_path):
    # extend, sample (and update_priority) over a storage of steps x envs: one
    # graph each, the contents, writer state (and priorities) of eager mode, and
    # samples that hold the sampled elements
    counter = GraphCounter()
    rb = make_ndim2_buffer(case, sampler, {"backend": counter}, tmp_path / "c")
    rb_eager = make_ndim2_buffer(case, sampler, False, tmp_path / "e")
    datatype = case[2]
    prioritized = sampler is PrioritizedSampler
    for step in range(CALLS):
        batch = make_rollout(datatype, ENVS, STEPS, step)
        index = rb.extend(batch)
        index_eager = rb_eager.extend(make_rollout(datatype, ENVS, STEPS, step))
        assert index.shape == (ENVS * STEPS, 2) and (index == index_eager).all()
        sample, info = rb.sample(return_info=True)
        index = info["index"]
        assert_valid_index(index, rb)
        expected = rb_eager.storage[index]
        if isinstance(rb, TensorDictReplayBuffer):
            assert (sample["index"] == torch.stack(index, -1)).all()
            sample = sample.exclude("index", WEIGHT_KEY)
            expected = expected.exclude("index")
        for x, y in zip(leaves(sample), leaves(expected), strict=True):
            assert x.shape[0] == 16 and (x == y).all()
        if prioritized:
            priority = torch.rand(16) * (step + 1)
            rb.update_priority(index, priority)
            rb_eager.update_priority(index, priority)
            assert_same_priorities(rb, rb_eager)
    assert len(rb) == MAX_SIZE
    assert_same_buffer(rb, rb_eager)
    # extend, sample, update_priority; the first extend and sample ran eagerly
    assert counter.graphs == 2 + prioritized


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
@pytest.mark.parametrize("max_size", [100, 98], ids=["whole-steps", "rounded-up"])
def test_ndim2_without_replacement_epochs(max_size, drop_last):
    # the epochs of a full storage of steps x envs sample each element once; a
    # capacity of 98 elements is rounded up to 25 steps of 4 envs (100) when the
    # first batch initializes the lazy storage, and the permutations grow with it
    counter = GraphCounter()
    rb = ReplayBuffer(
        storage=LazyTensorStorage(max_size, ndim=2),
        sampler=SamplerWithoutReplacement(drop_last=drop_last),
        batch_size=16,
        compile={"backend": counter},
    )
    rb.extend(make_rollout("tensordict", ENVS, 25, 0))
    assert len(rb) == 100
    indices = []
    for _ in range(30):
        sample, info = rb.sample(return_info=True)
        step, env = info["index"]
        assert (sample["obs"] == rb.storage[step, env]["obs"]).all()
        indices.append(step * ENVS + env)
    per_epoch = 96 if drop_last else 100
    epochs, once = epochs_of(torch.cat(indices), 100, per_epoch)
    assert len(epochs) >= 4 and all(once)
    # every element is drawn (with drop_last, each epoch leaves 4 out at random)
    assert set(torch.cat(indices).tolist()) == set(range(100))
    assert counter.graphs == 1  # sample; the only extend ran eagerly


@pytest.mark.parametrize("sampler", NDIM2_SAMPLERS)
def test_ndim2_fullgraph_step(sampler):
    # built empty, within the user's fullgraph step: extend, sample, update_priority
    counter = GraphCounter()
    case = (TensorDictReplayBuffer, LazyTensorStorage, "tensordict")
    rb = make_ndim2_buffer(case, sampler, True)
    rb_eager = make_ndim2_buffer(case, sampler, False)
    prioritized = sampler is PrioritizedSampler

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        sample, info = rb.sample(return_info=True)
        if prioritized:
            rb.update_priority(info["index"], sample["obs"][:, 0] + 1)
        return sample, info

    graphs = []
    for i in range(CALLS):
        sample, info = step(make_rollout("tensordict", ENVS, STEPS, i))
        rb_eager.extend(make_rollout("tensordict", ENVS, STEPS, i))
        assert_valid_index(info["index"], rb)
        assert (sample["obs"] == rb_eager.storage[info["index"]]["obs"]).all()
        if prioritized:
            rb_eager.update_priority(info["index"], sample["obs"][:, 0] + 1)
        graphs.append(counter.graphs)
    # the first call initializes the storage: one recompilation, then none
    assert graphs[1] <= 2 and graphs[-1] == graphs[1]
    assert_same_buffer(rb, rb_eager)
    if prioritized:
        assert_same_priorities(rb, rb_eager)


def test_ndim2_dynamic_steps():
    # rollouts of varying length: one more compilation, with dynamic shapes
    counter = GraphCounter()
    case = (ReplayBuffer, LazyTensorStorage, "tensordict")
    rb = make_ndim2_buffer(case, RandomSampler, {"backend": counter})
    rb_eager = make_ndim2_buffer(case, RandomSampler, False)
    for step, steps in enumerate([7, 7, 3, 7, 5, 2, 7, 6, 7, 4]):
        rb.extend(make_rollout("tensordict", ENVS, steps, step))
        rb_eager.extend(make_rollout("tensordict", ENVS, steps, step))
    assert counter.graphs == 2
    assert_same_buffer(rb, rb_eager)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", NDIM2_SAMPLERS[1:])
def test_ndim2_inductor(sampler):
    # the default backend on storages of steps x envs: it lowers, and agrees with eager
    case = (ReplayBuffer, LazyTensorStorage, "tensordict")
    rb = make_ndim2_buffer(case, sampler, True)
    rb_eager = make_ndim2_buffer(case, sampler, False)
    for step in range(6):
        rb.extend(make_rollout("tensordict", ENVS, STEPS, step))
        rb_eager.extend(make_rollout("tensordict", ENVS, STEPS, step))
        sample, info = rb.sample(return_info=True)
        assert_valid_index(info["index"], rb)
        assert (sample["obs"] == rb_eager.storage[info["index"]]["obs"]).all()
        if sampler is PrioritizedSampler:
            rb.update_priority(info["index"], torch.arange(16.0) + step)
            rb_eager.update_priority(info["index"], torch.arange(16.0) + step)
    assert_same_buffer(rb, rb_eager)
    if sampler is PrioritizedSampler:
        assert_same_priorities(rb, rb_eager, exact=False)


def test_ndim2_fullgraph_rounded_capacity():
    # within the user's fullgraph step, the first batch initializes a storage of
    # 98 elements, which rounds it up to 25 steps of 4 envs: the length (100, as
    # eager mode's) and the permutations of the sampler follow
    counter = GraphCounter()
    rb = ReplayBuffer(
        storage=LazyTensorStorage(98, ndim=2),
        sampler=SamplerWithoutReplacement(),
        batch_size=16,
        compile=True,
    )
    rb_eager = ReplayBuffer(storage=LazyTensorStorage(98, ndim=2), batch_size=16)
    step, sample = fullgraph_index_fns(rb, counter)
    indices = [step(make_rollout("tensordict", ENVS, 25, 0))]
    rb_eager.extend(make_rollout("tensordict", ENVS, 25, 0))
    assert len(rb) == len(rb_eager) == 100
    indices += [sample() for _ in range(30)]
    flat = torch.cat([steps * ENVS + envs for steps, envs in indices])
    epochs, once = epochs_of(flat, 100, 100)
    assert len(epochs) >= 4 and all(once)
    assert counter.graphs == 2
    assert_same_buffer(rb, rb_eager)


# SliceSampler: trajectories of 1 to 12 steps, found from their "episode" ids
# or from ("next", "done"), written over several laps of the storage


def make_trajectories(envs, steps, step, key):
    """A batch of envs x steps (of steps alone with envs=None) holding trajectories.

    Each trajectory has an "episode" id of its own; ``key`` is the entry the
    sampler finds them with: "episode" or "done" (then ("next", "done") marks
    the last step of each).
    """
    generator = torch.Generator().manual_seed(step)
    ends = torch.rand(envs or 1, steps, generator=generator) < 0.2
    episode = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], 1).cumsum(1)
    episode = episode + 100 * torch.arange(envs or 1)[:, None] + 1000 * step
    data = {"obs": torch.rand(envs or 1, steps, 3, generator=generator)}
    if key == "episode":
        data["episode"] = episode
    else:
        data["next"] = {"done": ends[..., None]}
    batch = TensorDict(data, [envs or 1, steps])
    return batch if envs else batch[0]


def slice_probabilities(rb_eager, slice_len, priorities=None):
    """The probability of each slice start, from eager mode's trajectories.

    SliceSampler: a trajectory is drawn uniformly among those at least slice_len
    long, then a start uniformly within it. PrioritizedSliceSampler (given the
    priorities of the storage positions, flat): a start with its priority among
    the steps a whole slice can start from.
    """
    start, _, lengths = rb_eager.sampler._get_stop_and_length(rb_eager.storage)
    shape = tuple(rb_eager.storage.shape)
    long_enough = lengths >= slice_len
    trajectories = long_enough.sum().item()
    probabilities = {}
    for first, length in zip(
        start[long_enough].tolist(), lengths[long_enough].tolist()
    ):
        for shift in range(length - slice_len + 1):
            key = ((first[0] + shift) % shape[0], *first[1:])
            if priorities is None:
                probabilities[key] = 1 / trajectories / (length - slice_len + 1)
            else:
                probabilities[key] = priorities[np.ravel_multi_index(key, shape)]
    if priorities is not None:
        total = sum(probabilities.values())
        probabilities = {key: p / total for key, p in probabilities.items()}
    return probabilities


def assert_slices_in_trajectories(rb, index, slice_len, key):
    # consecutive steps of one env, within one trajectory
    index = torch.stack(index, -1).view(-1, slice_len, len(index))
    steps = len(rb) // (rb.storage._total_shape[1:].numel())
    assert ((index[:, 1:, 0] - index[:, :-1, 0]) % steps == 1).all()
    assert (index[:, 1:, 1:] == index[:, :1, 1:]).all()
    data = rb.storage[tuple(index.flatten(0, 1).unbind(-1))]
    if key == "episode":
        episode = data["episode"].view(-1, slice_len)
        assert (episode == episode[:, :1]).all()
    else:
        assert not data["next", "done"].view(-1, slice_len)[:, :-1].any()


def lap_of_trajectories(ndim, step, key):
    """The step-th batch of make_trajectories for a storage of 90 elements with ndim
    1 (40 steps) or 2 (3 envs x 13 steps): a few of them wrap the storage."""
    return make_trajectories(
        None if ndim == 1 else 3, 40 if ndim == 1 else 13, step, key
    )


def slice_sampler(sampler_type, **kwargs):
    """A slice sampler for a storage of 90 elements (a PrioritizedSliceSampler
    takes its capacity and exponents first)."""
    if sampler_type is PrioritizedSliceSampler:
        return sampler_type(90, alpha=0.7, beta=0.5, **kwargs)
    return sampler_type(**kwargs)


def slice_buffer_pair(ndim, counter, batch_size, sampler_type, **sampler_kwargs):
    """Two ReplayBuffers over storages of 90 elements with the same slice sampler: one
    compiled with the counter as backend, one eager."""
    return tuple(
        ReplayBuffer(
            storage=LazyTensorStorage(90, ndim=ndim),
            sampler=slice_sampler(sampler_type, **sampler_kwargs),
            batch_size=batch_size,
            compile=compile,
        )
        for compile in ({"backend": counter}, False)
    )


def wrapped_slice_buffers(ndim, key, sampler_type):
    """slice_buffer_pair for samples of 100 slices of 3 steps, after 4 laps of
    trajectories found with key (the compiled buffer samples once in the first, as
    its first sample runs eagerly); with the graph counter."""
    counter = GraphCounter()
    rb, rb_eager = slice_buffer_pair(
        ndim, counter, 300, sampler_type, slice_len=3, traj_key="episode"
    )
    for step in range(4):
        batch = lap_of_trajectories(ndim, step, key)
        rb.extend(batch)
        rb_eager.extend(batch)
        if step == 0:
            rb.sample()
    return counter, rb, rb_eager


def wrapped_without_replacement_buffers(ndim, key, **sampler_kwargs):
    """slice_buffer_pair of SliceSamplerWithoutReplacement for samples of 5 slices (of
    15 steps), after 4 laps of trajectories found with key; with the graph counter."""
    counter = GraphCounter()
    rb, rb_eager = slice_buffer_pair(
        ndim,
        counter,
        15,
        SliceSamplerWithoutReplacement,
        num_slices=5,
        traj_key="episode",
        **sampler_kwargs,
    )
    for step in range(4):
        batch = lap_of_trajectories(ndim, step, key)
        rb.extend(batch)
        rb_eager.extend(batch)
    return counter, rb, rb_eager


def assert_start_frequencies(rb, probabilities, key):
    """20 samples of rb (slices of 3 steps within trajectories) start at each step with
    its probability; returns each sample's starts and info."""
    counts = dict.fromkeys(probabilities, 0)
    samples = []
    for _ in range(20):
        info = rb.sample(return_info=True)[1]
        assert_slices_in_trajectories(rb, info["index"], 3, key)
        starts = torch.stack(info["index"], -1)[::3]
        for first in starts.tolist():
            counts[tuple(first)] += 1  # a KeyError if eager mode cannot draw it
        samples.append((starts, info))
    draws = sum(counts.values())
    for start, p in probabilities.items():
        assert abs(counts[start] - draws * p) < 5 * (draws * p * (1 - p)) ** 0.5
    return samples


@pytest.mark.parametrize("key", ["episode", "done"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_slice_sampler_distribution(ndim, key):
    # the compiled sampler draws each slice start with eager mode's probability,
    # on a storage that the trajectories fill and wrap (and span the end of)
    counter, rb, rb_eager = wrapped_slice_buffers(ndim, key, SliceSampler)
    assert_same_buffer(rb, rb_eager)
    assert_start_frequencies(rb, slice_probabilities(rb_eager, 3), key)
    assert counter.graphs == 2  # extend and sample


def _slice_index_buffers(capacity, key, counter, sampler=SliceSampler):
    # a buffer compiled with counter (sampler(slice_len=4), one dim), and a
    # twin whose sampler finds the trajectories with its pass over the storage
    # (main patch 35's index removed), with the same generator: compilable for
    # a SliceSampler; for a SliceSamplerWithoutReplacement (main patch 36),
    # compiled too and without shuffling, as the compiled read of the index
    # draws its permutations before its graph and the pass within it; for a
    # PrioritizedSliceSampler (main patch 37, alpha=1 for sums of whole
    # priorities that are exact), compiled too, its tree of the priorities of
    # the starts removed with the index
    keys = {"traj_key": "episode"} if key == "episode" else {}
    args = ()
    if sampler is SliceSamplerWithoutReplacement:
        keys["shuffle"] = False
    if sampler is PrioritizedSliceSampler:
        args = (capacity, 1.0, 0.5)

    def make(**compile):
        rb = ReplayBuffer(
            storage=LazyTensorStorage(capacity),
            sampler=sampler(*args, slice_len=4, **keys),
            batch_size=24,
            **compile,
        )
        rb.set_rng(torch.Generator().manual_seed(0))
        return rb

    rb = make(compile={"backend": counter})
    if sampler is SliceSampler:
        rb_pass = make(compilable=True)
    else:
        rb_pass = make(compile={"backend": "eager"})
    assert rb.sampler._trajectory_index is not None
    rb_pass.sampler._trajectory_index = None
    if sampler is PrioritizedSliceSampler:
        assert rb.sampler._start_tree is not None
        rb_pass.sampler._start_tree = None
    return rb, rb_pass


def _trajectory_steps(step, size):
    # size steps of trajectories ended with probability 0.2, their ids after
    # those of the previous steps
    generator = torch.Generator().manual_seed(step)
    done = torch.rand(size, generator=generator) < 0.2
    episode = torch.cat([torch.zeros(1, dtype=torch.long), done[:-1].long()])
    return TensorDict(
        {
            "obs": torch.rand(size, 3, generator=generator),
            "episode": episode.cumsum(0) + 1000 * step,
            "next": {"done": done[:, None]},
        },
        [size],
    )


INDEXED_SAMPLERS = [
    SliceSampler,
    SliceSamplerWithoutReplacement,
    PrioritizedSliceSampler,
]


@pytest.mark.skipif(SERIES != "main", reason="main patches 35 to 37")
@pytest.mark.parametrize("sampler", INDEXED_SAMPLERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("key", ["episode", "done"])
def test_slice_sampler_index(key, sampler):
    # The trajectory index (updated by extend) of a SliceSampler (main patch
    # 35), SliceSamplerWithoutReplacement (36) or PrioritizedSliceSampler (37,
    # with new whole priorities after each sample) samples what the pass over
    # the storage samples, for the same uniforms: batches of any size that wrap
    # the storage and cut trajectories, a write through rb[i] = ..., a
    # state_dict round trip and empty() (the index rebuilt from the storage)
    counter = GraphCounter()
    rb, rb_pass = _slice_index_buffers(90, key, counter, sampler)
    generator = torch.Generator().manual_seed(1)
    for step in range(30):
        if step == 10:
            data = rb[5]
            data["next", "done"] = ~data["next", "done"]
            data["episode"] = data["episode"] + 7
            rb[5] = data.clone()
            rb_pass[5] = data.clone()
        if step == 18:
            state = rb.state_dict()
            for buffer in (rb, rb_pass):
                buffer.empty()
                buffer.load_state_dict(state)
        if step == 24:
            rb.empty()
            rb_pass.empty()
        batch = _trajectory_steps(
            step, int(torch.randint(1, 41, (), generator=generator))
        )
        rb.extend(batch.clone())
        rb_pass.extend(batch.clone())
        try:
            sample, info = rb.sample(return_info=True)
        except RuntimeError as error:
            with pytest.raises(RuntimeError, match=str(error)[:40]):
                rb_pass.sample()
            # the compiled sample drew its uniforms before it failed, the
            # other did not: the same generator state again
            for buffer in (rb, rb_pass):
                buffer.set_rng(torch.Generator().manual_seed(step))
            continue
        sample_pass, info_pass = rb_pass.sample(return_info=True)
        assert sample.shape == sample_pass.shape
        assert (sample == sample_pass).all()
        assert (info["index"][0] == info_pass["index"][0]).all()
        assert (info["next", "truncated"] == info_pass["next", "truncated"]).all()
        assert rb.sampler.ran_out == rb_pass.sampler.ran_out
        if sampler is PrioritizedSliceSampler:
            assert (info[WEIGHT_KEY] == info_pass[WEIGHT_KEY]).all()
            priority = torch.randint(1, 5, (24,), generator=generator).double()
            rb.update_priority(info["index"], priority)
            rb_pass.update_priority(info["index"], priority)
    assert_same_buffer(rb, rb_pass)


@pytest.mark.skipif(SERIES != "main", reason="main patches 35 to 37")
@pytest.mark.parametrize("sampler", INDEXED_SAMPLERS, ids=lambda s: s.__name__)
def test_slice_sampler_index_flat_in_capacity(sampler):
    # a compiled sample from the index makes no tensor of the storage's size
    # (its cost does not grow with the capacity); the pass makes several
    capacity = 20_000
    large = {}

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            value = node.meta.get("example_value")
            if node.op in ("call_function", "call_method") and isinstance(
                value, torch.Tensor
            ):
                # the storage's size is static (the size of a batch of a
                # SliceSamplerWithoutReplacement is not)
                numel = value.numel()
                if isinstance(numel, int) and numel >= capacity:
                    large.setdefault(mode, []).append(str(node.target))
        return gm.forward

    for mode in ("index", "pass"):
        torch._dynamo.reset()
        rb = _slice_index_buffers(capacity, "done", backend, sampler)[0]
        if mode == "pass":
            rb.sampler._trajectory_index = None
            rb.sampler._start_tree = None
        for step in range(3):
            rb.extend(_trajectory_steps(step, 40))
        large.pop(mode, None)  # the graphs of extend
        for _ in range(2):
            assert_valid_index(rb.sample(return_info=True)[1]["index"], rb)
    assert "index" not in large, large["index"]
    assert large.get("pass"), "the pass over the storage was not seen"


@pytest.mark.parametrize("key", ["episode", "done"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_prioritized_slice_sampler_distribution(ndim, key):
    # the compiled PrioritizedSliceSampler draws each slice start with its
    # priority among the steps a whole slice can start from (in eager mode's
    # trajectories), and weighs it against the least priority of all steps
    counter, rb, rb_eager = wrapped_slice_buffers(ndim, key, PrioritizedSliceSampler)
    shape = tuple(rb.storage.shape)
    positions = torch.stack(torch.unravel_index(torch.arange(90), shape), -1)
    priority = torch.rand(90) + 0.1
    rb.update_priority(positions, priority)
    rb_eager.update_priority(positions, priority)
    assert_same_buffer(rb, rb_eager)
    assert_same_priorities(rb, rb_eager)
    leaves = torch.as_tensor(rb.sampler._sum_tree[np.arange(90)])
    probabilities = slice_probabilities(rb_eager, 3, leaves.tolist())
    for starts, info in assert_start_frequencies(rb, probabilities, key):
        weight = leaves[np.ravel_multi_index(starts.T.numpy(), shape)] / leaves.min()
        weight = weight[:, None].expand(-1, 3).flatten() ** -0.5
        torch.testing.assert_close(info[WEIGHT_KEY], weight)
    assert counter.graphs == 3  # extend, sample and update_priority


@pytest.mark.parametrize(
    "sampler",
    [SliceSampler, SliceSamplerWithoutReplacement],
    ids=lambda t: t.__name__,
)
@pytest.mark.parametrize("buffer", [ReplayBuffer, TensorDictReplayBuffer])
@pytest.mark.parametrize("ndim", [1, 2])
def test_slice_sampler_fullgraph_step(ndim, buffer, sampler):
    # extend and sample within the user's fullgraph compile
    counter = GraphCounter()
    writer = RoundRobinWriter if buffer is ReplayBuffer else TensorDictRoundRobinWriter
    rb, rb_eager = (
        buffer(
            storage=LazyTensorStorage(90, ndim=ndim),
            writer=writer(),
            sampler=sampler(slice_len=2),
            batch_size=16,
            compile=compile,
        )
        for compile in (True, False)
    )

    @torch.compile(backend=counter, fullgraph=True)
    def step(batch):
        rb.extend(batch)
        return rb.sample(return_info=True)

    for i in range(CALLS):
        batch = lap_of_trajectories(ndim, i, "done")
        sample, info = step(batch)
        rb_eager.extend(batch)
        assert_slices_in_trajectories(rb, info["index"], 2, "done")
        truncated = info["next", "truncated"].view(-1, 2)
        assert (truncated == torch.tensor([False, True])).all()
        if buffer is TensorDictReplayBuffer:
            assert (sample["next", "truncated"] == info["next", "truncated"]).all()
    # the first call initializes the storage: one recompilation, then none
    assert counter.graphs == 2
    assert_same_buffer(rb, rb_eager)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler",
    [
        SliceSampler,
        SliceSamplerWithoutReplacement,
        PrioritizedSliceSampler,
    ],
    ids=lambda t: t.__name__,
)
def test_slice_sampler_inductor(sampler):
    # the default backend: it lowers, and its slices stay within trajectories
    rb, rb_eager = (
        ReplayBuffer(
            storage=LazyTensorStorage(90, ndim=2),
            sampler=slice_sampler(sampler, num_slices=4, traj_key="episode"),
            batch_size=16,
            compile=compile,
        )
        for compile in (True, False)
    )
    sampled = 0
    for step in range(6):
        batch = make_trajectories(3, 13, step, "episode")
        rb.extend(batch)
        rb_eager.extend(batch)
        try:
            sample, info = rb.sample(return_info=True)
        except RuntimeError as error:
            # main patch 29: a batch of the sampler without replacement that draws
            # short trajectories only fails, as in eager mode
            assert SERIES == "main" and sampler is SliceSamplerWithoutReplacement
            assert SHORT_BATCH_ERROR in str(error)
            continue
        assert_slices_in_trajectories(rb, info["index"], 4, "episode")
        assert (sample["obs"] == rb_eager.storage[info["index"]]["obs"]).all()
        sampled += 1
    assert sampled >= 3
    assert_same_buffer(rb, rb_eager)


def test_slice_sampler_too_short():
    # no trajectory as long as a slice: the RuntimeError of eager mode, raised
    # after the compiled sample; a shorter slice is then drawn
    rb = ReplayBuffer(
        storage=LazyTensorStorage(MAX_SIZE),
        sampler=SliceSampler(num_slices=2),
        batch_size=16,
        compile={"backend": GraphCounter()},
    )
    rb.extend(make_batch("tensordict", BATCH, 0))  # trajectories of 7 steps at most
    for _ in range(2):  # the first sample runs eagerly, the second compiled
        with pytest.raises(RuntimeError, match="single trajectory with sufficient"):
            rb.sample()
    assert_valid_index(rb.sample(8, return_info=True)[1]["index"], rb)


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode takes strict_length=True only"
)
@pytest.mark.parametrize("span", [False, True], ids=["no-span", "span"])
@pytest.mark.parametrize("trajectories", ["some-short", "all-long"])
@pytest.mark.parametrize("buffer", [ReplayBuffer, TensorDictReplayBuffer])
def test_slice_sampler_pad_output(buffer, trajectories, span):
    # main patch 23: pad_output=True compiles; every slice padded to its length
    # with its last step, and the mask in the info only where eager mode adds
    # it (a trajectory shorter than a slice); one graph for sample. Main patch
    # 26: with span too, where eager mode pads only where a trajectory is
    # short, the slices otherwise keeping the lengths that the span cuts them to.
    # Seeded: a span cuts all 4 slices of a sample to nothing about once in 50,000
    # samples, an empty batch that eager mode fails on too
    torch.manual_seed(0)
    counter = GraphCounter()
    rb, rb_eager = (
        buffer(
            storage=LazyTensorStorage(90),
            sampler=SliceSampler(
                slice_len=5,
                strict_length=False,
                pad_output=True,
                span=span,
                traj_key="episode",
            ),
            batch_size=20,
            compile=compile,
        )
        for compile in ({"backend": counter}, False)
    )
    mask_key = ("collector", "mask")
    sizes = set()
    for step in range(4):
        batch = lap_of_trajectories(1, step, "episode")
        if trajectories == "all-long":
            batch["episode"] = torch.arange(40) // 10 + 1000 * step
        rb.extend(batch)
        rb_eager.extend(batch)
        short = (rb_eager.sampler._get_stop_and_length(rb_eager.storage)[2] < 5).any()
        assert bool(short) == (trajectories == "some-short")
        for _ in range(3):  # the first sample runs eagerly, the next compiled
            _, info_eager = rb_eager.sample(return_info=True)
            sample, info = rb.sample(return_info=True)
            assert (mask_key in info) == (mask_key in info_eager) == bool(short)
            if buffer is TensorDictReplayBuffer:
                assert (mask_key in sample.keys(True)) == bool(short)
            sizes.add(sample.shape[0])
            index = info["index"][0]
            truncated = info["next", "truncated"].reshape(-1)
            episode = rb.storage[info["index"]]["episode"]
            if span and not short:
                # slices of 1 to 5 steps, at their lengths, each ending at a
                # truncated step
                assert sample.shape == index.shape
                for steps, trajectory in zip(*split_at_truncated(info, index, episode)):
                    assert 1 <= steps.shape[0] <= 5
                    assert (steps.diff() % 90 == 1).all()
                    assert (trajectory == trajectory[0]).all()
                continue
            assert sample.shape == (20,)
            real = info.get(mask_key, torch.ones(20, dtype=torch.bool)).view(4, 5)
            length = real.sum(1)
            # the real steps first, then the last one repeated (a slice that
            # the span cuts to nothing: its first step)
            assert (real == (torch.arange(5) < length[:, None])).all()
            assert span or length.min() >= 1
            end = (length - 1).clamp_min(0)
            index = index.view(4, 5)
            last = index.gather(1, end[:, None])
            assert (torch.where(real, index, last) == index).all()
            assert ((index[:, 1:] - index[:, :-1])[real[:, 1:]] % 90 == 1).all()
            episode = episode.view(4, 5)
            assert (episode == episode[:, :1]).all()
            truncated = truncated.view(4, 5)
            assert (truncated == (torch.arange(5) == end[:, None])).all()
    assert counter.graphs == 2  # extend and sample
    # with span, the batch's size depends on the data where nothing is padded
    assert (len(sizes) > 1) == (span and trajectories == "all-long"), sizes
    assert_same_buffer(rb, rb_eager)


def split_at_truncated(info, *values):
    """Each of values (a row per step of a sample whose slices vary in length) split
    into the sample's slices: after each truncated step, the last step being one."""
    truncated = info["next", "truncated"].reshape(-1)
    assert truncated[-1]
    assert all(value.shape[0] == truncated.shape[0] for value in values)
    cuts = truncated.nonzero()[:-1, 0] + 1
    return [torch.tensor_split(value, cuts) for value in values]


def trajectory_of_positions(rb_eager, slice_len):
    """The trajectory of each storage position, from eager mode's: its start,
    for the trajectories at least slice_len long, and the length of each of
    these trajectories, by its start.
    """
    start, _, lengths = rb_eager.sampler._get_stop_and_length(rb_eager.storage)
    steps = rb_eager.storage.shape[0]
    trajectory, length_of = {}, {}
    for first, length in zip(start.tolist(), lengths.tolist()):
        if length >= slice_len:
            length_of[tuple(first)] = length
            for shift in range(length):
                trajectory[((first[0] + shift) % steps, *first[1:])] = tuple(first)
    return trajectory, length_of


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode takes strict_length=True only"
)
@pytest.mark.parametrize("ndim", [1, 2])
def test_slice_without_replacement_not_strict(ndim):
    # main patch 24: strict_length=False, as in eager mode: every trajectory (the
    # short ones too) once per epoch, each slice as long as its trajectory at
    # most, so the batches change size; extend and sample compile once. Main patch
    # 27: a batch ends with its epoch, as in eager mode (the last one is short)
    counter, rb, rb_eager = wrapped_without_replacement_buffers(
        ndim, "episode", strict_length=False
    )
    trajectory, lengths = trajectory_of_positions(rb_eager, 1)
    starts = set(lengths)
    assert min(lengths.values()) < 3
    epoch = len(starts)
    batches = -(-epoch // 5)
    assert epoch % 5, "the last batch of an epoch is not short"
    for buffer in (rb, rb_eager):
        sampled, counts, sizes = [], [], set()
        for _ in range(2 * batches):
            sample, info = buffer.sample(return_info=True)
            index = torch.stack(info["index"], -1)
            sizes.add(index.shape[0])
            assert sample.shape == index.shape[:1]
            (slices,) = split_at_truncated(info, index)
            counts.append(len(slices))
            for piece in slices:
                owners = {trajectory[tuple(position)] for position in piece.tolist()}
                assert len(owners) == 1
                owner = owners.pop()
                assert piece.shape[0] == min(3, lengths[owner])
                sampled.append(owner)
        # each epoch takes every trajectory once, its last batch short
        assert counts == ([5] * (batches - 1) + [epoch - 5 * (batches - 1)]) * 2
        assert sorted(sampled[:epoch]) == sorted(sampled[epoch:]) == sorted(starts)
        assert len(sizes) > 1
    assert counter.graphs == 2  # extend and sample
    assert_same_buffer(rb, rb_eager)


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode completes the batches to their size"
)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("key", ["episode", "done"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_slice_without_replacement_strict(ndim, key, drop_last):
    # main patch 29: strict_length=True, as in eager mode, checked on both: an
    # epoch is a permutation of all the trajectories, a batch takes the next 5 of
    # them (its last one fewer, unless drop_last), and drops the slices of those
    # shorter than a slice; a batch of short ones only raises eager mode's error.
    # So each trajectory long enough is sampled once per epoch, and the batches
    # change size; extend and sample compile once
    counter, rb, rb_eager = wrapped_without_replacement_buffers(
        ndim, key, drop_last=drop_last
    )
    assert_same_buffer(rb, rb_eager)
    trajectory, lengths = trajectory_of_positions(rb_eager, 3)
    epoch = rb_eager.sampler._get_stop_and_length(rb_eager.storage)[2].numel()
    assert len(lengths) < epoch, "no trajectory shorter than a slice"
    batches = epoch // 5 if drop_last else -(-epoch // 5)
    for buffer in (rb, rb_eager):
        epochs, sizes = [], set()
        for _ in range(3):
            sampled, ran_out = [], []
            for number in range(batches):
                try:
                    index = buffer.sample(return_info=True)[1]["index"]
                except RuntimeError as error:
                    assert SHORT_BATCH_ERROR in str(error)
                    ran_out.append(buffer.sampler.ran_out)
                    continue
                assert_slices_in_trajectories(buffer, index, 3, key)
                first = torch.stack(index, -1)[::3].tolist()
                assert 0 < len(first) <= min(5, epoch - 5 * number)
                sampled += [trajectory[tuple(position)] for position in first]
                sizes.add(len(first))
                ran_out.append(buffer.sampler.ran_out)
            # ran_out marks the last batch of each epoch only
            assert ran_out == [False] * (batches - 1) + [True]
            assert len(set(sampled)) == len(sampled)
            epochs.append(sorted(sampled))
        if drop_last:
            assert all(set(drawn) <= set(lengths) for drawn in epochs)
        else:
            assert epochs == [sorted(lengths)] * 3
        assert len(sizes) > 1, "the batches kept one size"
    assert counter.graphs == 2  # extend and sample
    assert_same_buffer(rb, rb_eager)


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode completes the batches to their size"
)
def test_slice_without_replacement_docstring_first_example():
    # SliceSamplerWithoutReplacement's first docstring example, with compile=True:
    # 4 episodes for 10 slices of 32 steps; a batch takes each episode once, as in
    # eager mode: 4 x 32 = 128 steps
    episode = torch.zeros(1000, dtype=torch.int)
    episode[:300] = 1
    episode[300:550] = 2
    episode[550:700] = 3
    episode[700:] = 4
    data = TensorDict({"episode": episode, "obs": torch.randn(1000, 3)}, [1000])
    for compile in ({"backend": GraphCounter()}, False):
        rb = TensorDictReplayBuffer(
            storage=LazyMemmapStorage(1000),
            sampler=SliceSamplerWithoutReplacement(num_slices=10),
            batch_size=320,
            compile=compile,
        )
        rb.extend(data)
        for _ in range(3):  # the first sample runs eagerly, the next compiled
            sample = rb.sample()
            assert sample.shape == (128,)
            assert sorted(sample["episode"][::32].tolist()) == [1, 2, 3, 4]
        if compile:
            assert compile["backend"].graphs == 1  # sample (extend ran once)


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode takes strict_length=True only"
)
def test_slice_without_replacement_docstring_example():
    # SliceSamplerWithoutReplacement's docstring example, with compile=True: two
    # trajectories for slices of 10 samples of 5 steps; each batch takes each
    # trajectory once, as in eager mode, so that split_trajectories splits it
    from torchrl.collectors.utils import split_trajectories

    for compile in ({"backend": GraphCounter()}, False):
        rb = ReplayBuffer(
            storage=LazyTensorStorage(max_size=1000),
            sampler=SliceSamplerWithoutReplacement(
                slice_len=5, traj_key="episode", strict_length=False
            ),
            compile=compile,
        )
        rb.extend(
            TensorDict({"obs": torch.arange(100), "episode": torch.zeros(100)}, [100])
        )
        rb.extend(TensorDict({"obs": torch.arange(4), "episode": torch.ones(4)}, [4]))
        for _ in range(3):  # the first sample runs eagerly, the next compiled
            sample = rb.sample(50)
            assert sample.shape == (9,)
            split = split_trajectories(sample, trajectory_key="episode")
            assert split.shape == (2, 5)
            assert sorted(split["episode"][:, 0].tolist()) == [0.0, 1.0]
            assert split["mask"].sum() == 9
        if compile:
            assert compile["backend"].graphs == 2  # extend and sample


@pytest.mark.series(
    "main", reason="v0.6.0's compile mode takes strict_length=True only"
)
@pytest.mark.parametrize(
    "kwargs",
    [{"strict_length": False}, {"span": (False, True)}, {"span": (False, 1)}],
    ids=["not-strict", "span", "span-int"],
)
@pytest.mark.parametrize("ndim", [1, 2])
def test_prioritized_slice_varying_length(ndim, kwargs):
    # main patch 25: PrioritizedSliceSampler with strict_length=False (the first
    # step of a short trajectory starts a slice too) or a span on the right (a
    # slice may start closer to the end): each slice cut at the end of its
    # trajectory, so the batches change size. A start is drawn with its priority
    # among the steps that can start a slice in eager mode's trajectories, and
    # weighed against the least priority; extend, sample and update_priority
    # compile once each (update_priority once more, with dynamic shapes)
    counter = GraphCounter()
    rb, rb_eager = slice_buffer_pair(
        ndim,
        counter,
        30,
        PrioritizedSliceSampler,
        slice_len=5,
        traj_key="episode",
        **kwargs,
    )
    sizes = set()
    for step in range(4):
        batch = lap_of_trajectories(ndim, step, "episode")
        rb.extend(batch)
        rb_eager.extend(batch)
        info = rb.sample(return_info=True)[1]
        sizes.add(info["index"][0].shape[0])
        priority = torch.rand(info["index"][0].shape) + 0.1
        rb.update_priority(info["index"], priority)
        rb_eager.update_priority(info["index"], priority)
    assert_same_priorities(rb, rb_eager)
    trajectory, lengths = trajectory_of_positions(rb_eager, 1)
    steps, shape = rb.storage.shape[0], tuple(rb.storage.shape)
    span_right = kwargs.get("span", (False, False))[1]
    leaves = torch.as_tensor(rb.sampler._sum_tree[np.arange(90)])
    # the slices eager mode can draw, as (start, length), with their priorities
    allowed = {}
    for position, first in trajectory.items():
        shift = (position[0] - first[0]) % steps
        remaining = lengths[first] - 1 - shift
        enough = remaining >= (1 if span_right is True else 4 - span_right)
        if enough or (not shift and "strict_length" in kwargs):
            flat = np.ravel_multi_index(position, shape)
            allowed[position, min(remaining + 1, 5)] = leaves[flat].item()
    total = sum(allowed.values())
    counts = dict.fromkeys(allowed, 0)
    for _ in range(30):
        info = rb.sample(return_info=True)[1]
        index = torch.stack(info["index"], -1)
        sizes.add(index.shape[0])
        assert info[WEIGHT_KEY].shape == index.shape[:1]
        slices, weights = split_at_truncated(info, index, info[WEIGHT_KEY])
        assert len(slices) == 6
        for piece, weight in zip(slices, weights):
            owners = {trajectory[tuple(position)] for position in piece.tolist()}
            assert len(owners) == 1  # within one trajectory
            assert ((piece[1:, 0] - piece[:-1, 0]) % steps == 1).all()
            start = tuple(piece[0].tolist())
            counts[start, piece.shape[0]] += 1  # a KeyError if eager cannot draw it
            p_start = leaves[np.ravel_multi_index(start, shape)]
            expected = (p_start / leaves.min()) ** -0.5
            torch.testing.assert_close(weight, expected.expand(weight.shape))
    draws = sum(counts.values())
    cut = [key for key in allowed if key[1] < 5]
    assert cut
    # each slice, then the cut ones together (a sharper check of the starts that
    # only these settings allow)
    for keys in [[key] for key in allowed] + [cut]:
        p = sum(allowed[key] for key in keys) / total
        drawn = sum(counts[key] for key in keys)
        assert abs(drawn - draws * p) < 5 * (draws * p * (1 - p)) ** 0.5 + 1, keys
    assert len(sizes) > 1
    assert counter.graphs <= 4  # extend, sample, update_priority (twice)
    assert_same_buffer(rb, rb_eager)


@pytest.mark.series(
    "v0.6.0",
    reason="main's compile mode returns eager mode's batches, which change size "
    "(main patch 29): test_slice_without_replacement_strict",
)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("key", ["episode", "done"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_slice_without_replacement_epochs(ndim, key, drop_last):
    # on a storage the trajectories wrapped, each epoch samples every trajectory
    # at least as long as a slice once (eager mode's trajectories), and none of
    # the shorter ones; the batches keep their size
    counter, rb, rb_eager = wrapped_without_replacement_buffers(
        ndim, key, drop_last=drop_last
    )
    assert_same_buffer(rb, rb_eager)
    trajectory, long_enough = trajectory_of_positions(rb_eager, 3)
    per_epoch = len(long_enough) // 5 * 5 if drop_last else len(long_enough)
    sampled, ran_out = [], []
    for _ in range(3 * per_epoch // 5 + 2):
        index = rb.sample(return_info=True)[1]["index"]
        assert_slices_in_trajectories(rb, index, 3, key)
        first = torch.stack(index, -1)[::3].tolist()
        assert all(tuple(position) in trajectory for position in first)
        sampled += [trajectory[tuple(position)] for position in first]
        ran_out.append(rb.sampler.ran_out)
    # the trajectories by their rank among those long enough, cut into epochs
    rank = {start: i for i, start in enumerate(sorted(long_enough))}
    sampled = torch.tensor([rank[start] for start in sampled])
    epochs, once = epochs_of(sampled, len(long_enough), per_epoch)
    assert len(epochs) >= 3 and all(once)
    # ran_out marks the batch that takes the last trajectory of an epoch (with
    # drop_last, per_epoch is a whole number of batches)
    ends = torch.arange(1, len(ran_out) + 1) * 5
    assert ran_out == ((ends - 5) // per_epoch != ends // per_epoch).tolist()
    assert counter.graphs == 2  # extend and sample
