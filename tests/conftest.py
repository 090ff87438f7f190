"""Fixtures shared by the test modules that start their own Ray instance, and the tests' grouping for pytest-xdist."""

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # set before numpy and torch load: one thread per worker, as per trial
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The group for the README's `-n 2 --dist loadgroup`: the tests that start a Ray instance of their own (those
    using `ray_tmp`) run on one worker, one after another, since two of them on two cores would each run at half speed
    towards their timeouts. Every other test goes to whichever worker is free, so the two finish together (a group per
    module put all of test_train, the longest module, on one worker); a module-scoped fixture is then built once per
    worker that runs its module."""
    for item in items:
        if "ray_tmp" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture
def fast_head_fit(monkeypatch):
    """One L-BFGS round on 200 points a group for the head's fit to the group solve's functions, in tests that check
    something else: the 30 rounds of up to 500 iterations on 2000 points took ~50 s a run, most of a short test's time
    (3 rounds on 2000 points still ~10 s, 3 on 200 ~7 s)."""
    monkeypatch.setattr("metabo_tune.train.GROUP_SOLVE_HEAD_ROUNDS", 1)
    monkeypatch.setattr("metabo_tune.train.GROUP_SOLVE_HEAD_POINTS", 200)


@pytest.fixture
def ray_tmp(tmp_path):
    path = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    yield path
    kill_ray_of(path, tmp_path)
    shutil.rmtree(path, ignore_errors=True)


def kill_ray_of(ray_tmp: Path, tmp_path: Path) -> None:
    """Kill the processes of this test's Ray only: those whose command line, environment or working
    directory names its Ray temp dir, or whose working directory is the test's (Ray's agents overwrite
    their command line and environment with a process title, but keep the directory they started in)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        ours = str(ray_tmp) in cmdline or str(ray_tmp) in environ
        if ours or cwd.is_relative_to(ray_tmp) or cwd.is_relative_to(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
