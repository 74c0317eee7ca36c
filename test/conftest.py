"""Shared helpers of the acceptance suite, run against the installed fork (scripts/fork.sh)."""
from __future__ import annotations

import inspect
import pathlib
import sys

import pytest
import torch
from packaging import version

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_2_6 = version.parse(torch.__version__.split("+")[0]) >= version.parse("2.6")
sys.path.insert(0, str(ROOT / "scripts"))

from rb_compile_cases import (  # noqa: E402, F401
    buffer_differences,
    detect_series,
    GraphCounter,
    index_problems,
    leaves,
    make_batch,
    priority_differences,
    SERIES,
)


def WRITER_STATE(cursor, write_count):
    """The writer's state_dict in the base's checkpoint format (main keeps the
    write count, v0.6.0 does not)."""
    if SERIES == "v0.6.0":
        return {"_cursor": cursor}
    return {"_cursor": cursor, "_write_count": write_count}


def pytest_configure(config):
    from torchrl.data import ReplayBuffer

    config.addinivalue_line(
        "markers", "series(name, reason): runs against the fork of that series only"
    )
    config.addinivalue_line(
        "markers",
        "slow: a minute or more (inductor's compiles, the scripts end to end); run "
        "first, so that pytest -n 2 runs the rest beside it rather than after",
    )
    if SERIES != detect_series():
        pytest.exit(
            f"RB_SERIES={SERIES}, but the torchrl found is the {detect_series()} "
            f"series' fork: test with .venv/{SERIES}/bin/python (scripts/test.sh "
            f"--series {SERIES})",
            returncode=1,
        )

    if "compile" not in inspect.signature(ReplayBuffer.__init__).parameters:
        pytest.exit(
            "the torchrl found is not the patched fork (ReplayBuffer has no `compile` "
            "argument): run scripts/fork.sh and test with .venv/SERIES/bin/python",
            returncode=1,
        )


def pytest_report_header(config):
    return f"patch series: {SERIES} (RB_SERIES, or the installed torchrl)"


def pytest_collection_modifyitems(config, items):
    # the slow tests first, in their order: xdist hands the tests out in this order
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        marker = item.get_closest_marker("series")
        if marker is not None and marker.args[0] != SERIES:
            reason = marker.kwargs.get("reason", "")
            item.add_marker(
                pytest.mark.skip(reason=f"{marker.args[0]} series only: {reason}")
            )


def assert_same_buffer(rb, rb_eager, write_count=True):
    """Length, writer state and every stored value equal.

    ``write_count=False`` leaves out the write count, which torchrl's checkpoints do not keep.
    """
    differences = buffer_differences(rb, rb_eager, write_count)
    assert not differences, differences


def assert_same_priorities(rb, rb_eager, exact=True):
    # the sampler's trees, max priority and default priority equal to eager mode's;
    # inductor fuses the priority math, hence rounds differently (exact=False)
    differences = priority_differences(rb, rb_eager, exact)
    assert not differences, differences


def assert_valid_index(index, rb):
    # within the filled part: a tuple of one index per dim for ndim=2 storages
    # (and for slice samplers)
    problems = index_problems(index, rb)
    assert not problems, problems


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # every test counts its own graphs
    torch._dynamo.reset()
    yield
