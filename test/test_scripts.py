"""The project's own files: the patch series, scripts/fork.sh, the compile report and the benchmarks."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import rb_compile_cases
from conftest import ROOT
from rb_compile_cases import (
    expected_host_syncs,
    KNOWN_HOST_SYNCS,
    matrix_combinations,
    outside_matrix,
    SERIES as SERIES_NAME,
    SERIES_NAMES,
)


def series_patches(name):
    """The patches of a series, in the order of its series file."""
    return [
        line.strip()
        for line in (ROOT / "patches" / name / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


# the series of the fork under test (its patches, its build/ tree)
PATCHES = ROOT / "patches" / SERIES_NAME
SERIES = series_patches(SERIES_NAME)
FORK = ROOT / "build" / SERIES_NAME / "torchrl"
ALL_PATCHES = [(name, patch) for name in SERIES_NAMES for patch in series_patches(name)]
TITLE = re.compile(
    r"^Subject: \[PATCH(?: \d+/\d+)?\] \[(BugFix|Feature|Performance|Test|Refactor|Doc)\] \S"
)
STATUS = re.compile(
    r"^Upstream-Status: (Pending|Accepted|Submitted \[\S+\]|Inappropriate \[.+\])$",
    re.M,
)


def run_script(name, *args):
    # a Python script of scripts/, with the interpreter that runs the tests (the fork's)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def run_fork(*args, cwd=ROOT):
    # a checkout named in the environment would change the base these tests ask for
    env = {k: v for k, v in os.environ.items() if k != "TORCHRL_CHECKOUT"}
    return subprocess.run(
        ["bash", str(cwd / "scripts" / "fork.sh"), "--series", SERIES_NAME, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )


@pytest.mark.parametrize("name", SERIES_NAMES)
def test_series_lists_every_patch(name):
    patches = series_patches(name)
    assert patches, f"patches/{name}/series lists no patch"
    directory = ROOT / "patches" / name
    assert sorted(p.name for p in directory.glob("*.patch")) == sorted(patches)
    assert patches == sorted(
        patches
    ), "the series is applied in the order of its numbers"


def test_no_patch_outside_a_series():
    assert not list((ROOT / "patches").glob("*.patch"))
    assert sorted(p.name for p in (ROOT / "patches").iterdir()) == sorted(SERIES_NAMES)


@pytest.mark.parametrize(
    "name,patch", ALL_PATCHES, ids=[f"{n}/{p[:4]}" for n, p in ALL_PATCHES]
)
def test_patch_message(name, patch):
    text = (ROOT / "patches" / name / patch).read_text()
    header, _, diff = text.partition("\n---\n")
    subject = next(line for line in header.splitlines() if line.startswith("Subject:"))
    assert TITLE.match(subject), f"{patch}: title not in torchrl style: {subject}"
    body = header.split("\n\n", 1)[1]
    assert len(body.split()) >= 30, f"{patch}: the body should say why"
    assert STATUS.search(body), f"{patch}: no Upstream-Status trailer"
    paths = re.findall(r"^diff --git a/(\S+) ", diff, re.M)
    assert paths and all(p.startswith(("torchrl/", "test/")) for p in paths), paths


def make_repo(path, content="x = 1\n"):
    path.mkdir()
    (path / "a.py").write_text(content)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "a.py"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"],
    ):
        subprocess.run(cmd, cwd=path, check=True)
    return path


def test_fork_refuses_wrong_version(tmp_path):
    repo = make_repo(tmp_path / "rl")
    result = run_fork("--checkout", str(repo), "--no-report")
    assert result.returncode == 1
    assert f"not at the base of the {SERIES_NAME} series" in result.stderr


def test_fork_refuses_dirty_checkout(tmp_path):
    repo = make_repo(tmp_path / "rl")
    (repo / "a.py").write_text("x = 2\n")
    result = run_fork("--checkout", str(repo), "--no-report")
    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr
    assert (repo / "a.py").read_text() == "x = 2\n"  # left as found


@pytest.mark.parametrize(
    "args,message",
    [
        [["--torch", "1.0"], "torch 1.0 is not supported"],
        [["--base", "ftp"], "--base takes checkout, clone or wheel"],
        [["--base", "checkout"], "--base checkout needs --checkout"],
        [["--frobnicate"], "unknown argument"],
        [["--series", "v9"], "unknown series 'v9'"],
        [["--no-timing"], "--no-timing goes with --full-report"],
    ],
)
def test_fork_refuses_bad_arguments(args, message):
    result = run_fork(*args, "--no-report")
    assert result.returncode != 0
    assert message in result.stderr


def test_fork_bad_patch_leaves_nothing(tmp_path):
    # a patch that does not apply: named with its file, and no build is left behind
    project = tmp_path / "project"
    for part in ("scripts", "patches", "ci"):
        shutil.copytree(ROOT / part, project / part)
    patch = project / PATCHES.relative_to(ROOT) / SERIES[1]
    text = patch.read_text()
    start = text.index("\ndiff --git a/torchrl/")  # the wheel base leaves out test/
    context = re.compile(r"^ \s+\S.*$", re.M).search(text, start).group(0)
    patch.write_text(
        text[:start] + text[start:].replace(context, " # not at the base", 1)
    )
    target = re.search(r"^diff --git a/(torchrl/\S+) ", text, re.M).group(1)
    result = run_fork("--base", "wheel", "--no-report", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"patch {SERIES[1][:4]}" in result.stderr
    assert target in result.stderr
    build = project / "build"
    assert not build.exists() or not any(p.is_file() for p in build.rglob("*"))


@pytest.mark.parametrize("work", ["uncommitted", "committed"])
def test_fork_keeps_unexported_work(tmp_path, work):
    # a rebuild (here: patches/ changed since build/torchrl was built) never
    # replaces work in build/torchrl that patches/ does not hold
    project = tmp_path / "project"
    for part in ("scripts", "patches", "ci"):
        shutil.copytree(ROOT / part, project / part)
    (project / "build" / SERIES_NAME).mkdir(parents=True)
    fork = make_repo(project / "build" / SERIES_NAME / "torchrl", "x = 1\n")
    subprocess.run(["git", "tag", "series-base"], cwd=fork, check=True)
    (fork / ".git" / "rb-compile-fingerprint").write_text("an older series\n")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=fork, capture_output=True, text=True
    ).stdout
    (fork / ".git" / "rb-compile-head").write_text(head)
    (fork / "a.py").write_text("x = 2\n")
    if work == "committed":
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "w"],
            cwd=fork,
            check=True,
        )
    result = run_fork("--base", "wheel", "--no-report", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    expected = (
        "uncommitted changes" if work == "uncommitted" else "commits not exported"
    )
    assert f"build/{SERIES_NAME}/torchrl has {expected}" in result.stderr
    assert "export-patches.sh" in result.stderr
    assert (fork / "a.py").read_text() == "x = 2\n"


def fork_head():
    return subprocess.run(
        ["git", "-C", str(FORK), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_fork_rerun_reuses_the_build():
    if not (FORK / ".git" / "rb-compile-fingerprint").exists():
        pytest.skip("no fork built yet: run scripts/fork.sh")
    head = fork_head()
    result = run_fork("--no-report")
    assert result.returncode == 0, result.stderr
    assert f"build/{SERIES_NAME}/torchrl is up to date" in result.stdout
    assert "installing" not in result.stdout and "building" not in result.stdout
    assert fork_head() == head


def test_fork_check_on_the_build():
    # test.sh ran fork.sh --check before these tests: the build is current
    if not (FORK / ".git" / "rb-compile-fingerprint").exists():
        pytest.skip("no fork built yet: run scripts/fork.sh")
    result = run_fork("--check")
    assert result.returncode == 0, result.stderr
    assert f"build/{SERIES_NAME}/torchrl is up to date" in result.stdout
    result = run_fork("--check", "--torch", "2.13.0")
    assert result.returncode == 1
    assert "--check takes no other option than --series (not --torch)" in result.stderr


def test_fork_check_finds_a_stale_build(tmp_path):
    # --check says why fork.sh would rebuild, and changes nothing
    project = tmp_path / "project"
    for part in ("scripts", "patches", "ci"):
        shutil.copytree(ROOT / part, project / part)
    result = run_fork("--check", cwd=project)
    assert result.returncode == 1
    assert f"no build/{SERIES_NAME}/torchrl built yet" in result.stderr
    (project / "build" / SERIES_NAME).mkdir(parents=True)
    fork = make_repo(project / "build" / SERIES_NAME / "torchrl", "x = 1\n")
    (fork / ".git" / "rb-compile-fingerprint").write_text("an older series\n")
    (fork / ".git" / "rb-compile-mode").write_text("wheel\n")
    venv = project / ".venv" / SERIES_NAME
    venv.mkdir(parents=True)
    (venv / ".rb-compile-torch").write_text("2.13.0\n")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    result = run_fork("--check", cwd=project)
    assert result.returncode == 1
    assert (
        f"build/{SERIES_NAME}/torchrl is older than patches/{SERIES_NAME}"
        in result.stderr
    )
    assert f"run scripts/fork.sh --series {SERIES_NAME}" in result.stderr
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert (fork / ".git" / "rb-compile-fingerprint").read_text() == "an older series\n"


def test_fork_commits_one_per_patch():
    fork = FORK
    if not (fork / ".git").exists():
        pytest.skip("no fork built yet: run scripts/fork.sh")
    subjects = subprocess.run(
        [
            "git",
            "-C",
            str(fork),
            "log",
            "--reverse",
            "--format=%s",
            "series-base..HEAD",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    expected = []
    for patch in SERIES:
        header = (PATCHES / patch).read_text().partition("\n---\n")[0]
        subject = re.search(r"^Subject: \[PATCH[^\]]*\] (.*(?:\n .*)*)", header, re.M)
        expected.append(" ".join(subject.group(1).split()))
    assert subjects == expected


def markdown_tables(text):
    """The tables of a markdown text, each as a list of rows (dicts by column)."""
    tables = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if len(lines) < 2:
            continue
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        tables.append(
            [
                dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
                for line in lines[2:]
            ]
        )
    return tables


def test_compile_report_seed_cases(tmp_path):
    # the default report: the seed's cases, counted, in a minute or so
    markdown = tmp_path / "report.md"
    result = run_script(
        "compile_report.py", "--series", SERIES_NAME, "--markdown", str(markdown)
    )
    assert result.returncode == 0, result.stderr
    (cases,) = markdown_tables(markdown.read_text())
    assert [row["case"] for row in cases] == [
        f"LazyTensorStorage-RoundRobinWriter-RandomSampler-{datatype}"
        for datatype in ("tensor", "tensordict", "pytree")
    ]
    for row in cases:
        assert row["extend graphs"] == row["sample graphs"] == "1", row
        assert row["recompiles"] == "0" and row["graph breaks"] == "0", row
        assert row["fullgraph step"] == "yes (2 graphs)", row
    assert "extend µs eager" not in cases[0]
    assert "compile_report.py --full" in result.stdout


def test_compile_report_refuses_another_series():
    other = next(name for name in SERIES_NAMES if name != SERIES_NAME)
    result = run_script("compile_report.py", "--series", other)
    assert result.returncode == 2
    assert f".venv/{other}/bin/python" in result.stderr


# what the full report of each series shows for its --only subset
FULL_REPORT = {
    "v0.6.0": {
        "only": "^(ReplayBuffer-)?LazyTensorStorage-(ndim1-)?RoundRobinWriter-"
        "(RandomSampler|PrioritizedSampler)|^PrioritizedReplayBuffer-LazyMemmapStorage",
        "cases": [
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-tensor",
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-tensordict",
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-pytree",
            "LazyTensorStorage-RoundRobinWriter-PrioritizedSampler-tensor",
            "LazyTensorStorage-RoundRobinWriter-PrioritizedSampler-pytree",
        ],
        # 3 storages x 6 samplers x (ndim 1: 3 writers, ndim 2: 2 round-robin
        # writers), with 2 buffers; 3 storages x 2 ndim with 2 prioritized buffers
        "compiled": 2 * 90 + 2 * 6,
        "refused": 74,
        "matrix rows": 4,
        "refused components": {
            "storage=ListStorage": "38",
            "impossible at the base": "36",
        },
    },
    "main": {
        "only": "^(ReplayBuffer-)?LazyTensorStorage-(ndim1-)?RoundRobinWriter-"
        "(RandomSampler|PrioritizedSampler-tensor)|^TensorDictReplayBuffer-"
        "LazyMemmapStorage-ndim1-TensorDictRoundRobinWriter-SamplerWithoutReplacement"
        "|^TensorDictPrioritizedReplayBuffer-TensorStorage"
        "|^TensorDictReplayBuffer-TensorStorage-ndim1-TensorDictMaxValueWriter-"
        "PrioritizedSampler|^ReplayBuffer-LazyTensorStorage-ndim2-RoundRobinWriter-"
        "SliceSampler|^TensorDictReplayBuffer-LazyTensorStorage-ndim1-"
        "TensorDictRoundRobinWriter-SliceSamplerWithoutReplacement"
        "|^ReplayBuffer-LazyTensorStorage-ndim1-RoundRobinWriter-PrioritizedSlice",
        "cases": [
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-tensor",
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-tensordict",
            "LazyTensorStorage-RoundRobinWriter-RandomSampler-pytree",
            "LazyTensorStorage-RoundRobinWriter-PrioritizedSampler-tensor",
        ],
        # the whole matrix, as for v0.6.0: 3 storages x 6 samplers x (ndim 1:
        # 3 writers, ndim 2: 2 round-robin writers), with 2 buffers; 3 storages
        # x 2 ndim with the 2 prioritized buffers
        "compiled": 2 * 90 + 2 * 6,
        "refused": 74,
        "matrix rows": 9,
        "refused components": {
            "storage=ListStorage": "38",
            "impossible at the base": "36",
        },
    },
}


@pytest.mark.slow
def test_compile_report(tmp_path):
    expected = FULL_REPORT[SERIES_NAME]
    markdown = tmp_path / "report.md"
    only = expected["only"]
    result = run_script(
        "compile_report.py",
        "--full",
        "--no-timing",
        "--calls",
        "5",
        "--only",
        only,
        "--markdown",
        str(markdown),
    )
    assert result.returncode == 0, result.stderr
    text = markdown.read_text()
    cases, matrix, known_syncs, refused, *outside = markdown_tables(text)
    names = [row["case"] for row in cases]
    assert names == expected["cases"]
    for row in cases:
        assert row["extend graphs"] == "1", row
        assert row["sample graphs"] == "1", row
        prioritized = "Prioritized" in row["case"]
        assert row["update_priority graphs"] == ("1" if prioritized else "-"), row
        assert row["recompiles"] == "0" and row["graph breaks"] == "0", row
        assert row["fullgraph step"] == "yes (2 graphs)", row
    # the matrix: every buffer class, storage (ndim 1, 2), writer and sampler
    supported = [c for c in matrix_combinations() if c.supported]
    assert len(supported) == expected["compiled"]
    assert f"{len(supported)} compile, {expected['refused']} are refused" in text
    assert [row["combination"] for row in matrix] == [
        c.name for c in supported if re.search(only, c.name)
    ]
    assert len(matrix) == expected["matrix rows"]
    for row in matrix:
        prioritized = "Prioritized" in row["combination"]
        assert row["extend graphs"] == "1" and row["sample graphs"] == "1", row
        assert row["update_priority graphs"] == ("1" if prioritized else "-"), row
        assert row["graphs when interleaved"] == "0", row
        assert row["graph breaks"] == "0" and row["same as eager"] == "yes", row
        if "LazyMemmapStorage" in row["combination"]:
            assert row["fullgraph step"] == "yes, extended once before (1 graph)"
        elif "MaxValueWriter" in row["combination"]:
            # the first call of the round-robin writers adds an "index" entry to
            # a preallocated storage, which the next call guards anew; the
            # max-value writer's extend writes none
            assert row["fullgraph step"] == "yes (1 graph)", row
        else:
            assert row["fullgraph step"] == "yes (2 graphs)", row
        # the host syncs of its graphs: only the known ones of its components
        combination = next(c for c in supported if c.name == row["combination"])
        syncs = sorted(expected_host_syncs(combination, "compile")) + sorted(
            expected_host_syncs(combination, "fullgraph")
        )
        assert row["host syncs"] == ("; ".join(syncs) or "none"), row
    # the known host syncs, each with its reason
    assert [
        (row["graphs"], row["component"], row["host sync"]) for row in known_syncs
    ] == [
        (where, f"{kind}={name}", sync)
        for where, kind, name, sync, _ in KNOWN_HOST_SYNCS
    ]
    assert all(row["why"] for row in known_syncs)
    # each refused component with its reason
    refused = {row["component"]: row for row in refused}
    for component, count in expected["refused components"].items():
        assert refused[component]["combinations"] == count, refused[component]
    # every writer of the matrix compiles where the base takes it
    assert not [c for c in refused if c.startswith("writer=")]
    # and every sampler, in both series
    assert not [c for c in refused if c.startswith("sampler=")]
    assert "not compatible" in refused["impossible at the base"]["reason"]
    # main's other components, outside the matrix: each refused, saying what to use
    expected_outside = list(outside_matrix())
    assert len(outside) == (1 if expected_outside else 0)
    if expected_outside:
        assert [row["component"] for row in outside[0]] == expected_outside
        for row in outside[0]:
            assert "(expected a" in row["refused with"], row


@pytest.mark.slow
def test_bench_quick(tmp_path):
    # the benchmark suite runs end to end; timings are reported, never asserted
    if not (FORK / ".git").exists():
        pytest.skip("no fork built yet: run scripts/fork.sh")
    out = tmp_path / "bench"
    result = run_script(
        "bench.py", "--series", SERIES_NAME, "--quick", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    impls = set()
    for raw in (out / "raw").glob("*.json"):
        for bench in json.loads(raw.read_text())["benchmarks"]:
            impls.add(bench["extra_info"]["impl"])
            assert bench["stats"]["median"] > 0
    assert impls == {"base", "fork", "ring"}
    report = (out / "report.md").read_text()
    targets = report.split("## Targets")[1].split("##")[0]
    rows = [line for line in targets.splitlines() if line.startswith("| ")][1:]
    # the reference's 5, prioritized at 2 capacities, 2 first compiled calls, the
    # per-sampler flat-in-capacity 6 and the max-value writer's 1
    assert len(rows) == 16, targets
    for row in rows:
        assert re.search(
            r"\| (met|\*\*missed\*\* by [\d.]+×|not measured) \|$", row
        ), row
    assert "| extend |" in report and "| sample |" in report
    # every sampler of the flat-in-capacity cases is timed in both modes (--quick:
    # at capacity 1,000 only), and the max-value writer's extend
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench
        import bench_cases
    except ImportError as error:  # bench_cases imports the fork's torchrl
        pytest.fail(f"scripts/bench*.py do not import: {error}")
    finally:
        sys.path.pop(0)
    assert list(bench.SAMPLERS) == list(bench_cases.SAMPLERS)
    # every sampler of the compile matrix
    assert set(bench.SAMPLERS) == set(rb_compile_cases.SAMPLERS)
    for sampler in bench.SAMPLERS:
        row = re.search(rf"^\| {sampler} \| 1,000 \|(.*)$", report, re.M)
        assert row, sampler
        # base eager (absent where a wheel base's C++ trees do not load), base
        # compiled (not measured), fork eager, fork compiled
        cells = [cell.strip() for cell in row.group(1).split("|")[:4]]
        assert cells[1] == "—" and "—" not in (cells[2], cells[3]), row
    assert re.search(
        rf"^\| {re.escape(bench.MAX_VALUE)} extend \| [\d,.]+ \|", report, re.M
    )
    for plot in ("extend_vs_batch.png", "sample_vs_size.png", "sample_vs_capacity.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "tmp").exists()
    # --report-only: the report again from the raw files, here with a second round
    # copied in (its times doubled: the least disturbed round is the first)
    for impl in ("base", "fork"):
        raw = json.loads((out / "raw" / f"{impl}-0.json").read_text())
        for case in raw["benchmarks"]:
            case["stats"]["median"] *= 2
        (out / "raw" / f"{impl}-1.json").write_text(json.dumps(raw))
    (out / "report.md").unlink()
    result = run_script(
        "bench.py", "--series", SERIES_NAME, "--report-only", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    again = (out / "report.md").read_text()
    assert "the least disturbed of 2 round(s)" in again
    assert again.split("## Targets")[1] == report.split("## Targets")[1]
    (out / "raw" / "fork-0.json").unlink()
    (out / "raw" / "fork-1.json").unlink()
    result = run_script(
        "bench.py", "--series", SERIES_NAME, "--report-only", "--out", str(out)
    )
    assert result.returncode == 1 and "no base-N.json and fork-N.json" in result.stderr
