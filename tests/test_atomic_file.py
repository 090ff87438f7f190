import os
import stat

import pytest

from metabo_tune import atomic_file
from metabo_tune.atomic_file import write_atomically


def test_text_and_bytes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "trials.csv"
    write_atomically(path, "a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    write_atomically(path, b"\x00\x01binary")
    assert path.read_bytes() == b"\x00\x01binary"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]


def test_a_write_that_fails_before_the_rename_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "searcher.pkl"
    write_atomically(path, b"old state")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_file.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, b"new state")
    assert path.read_bytes() == b"old state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["searcher.pkl"]


def test_the_file_gets_the_umask_permissions_not_private_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "analysis.md", "# analysis\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "analysis.md").stat().st_mode) == 0o644
