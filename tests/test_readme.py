"""The README's Python examples run as written, from a checkout with a smoke experiment in results/."""

import re
from pathlib import Path

import pytest
from test_analysis import make_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_examples_and_stays_a_manual():
    assert len(EXAMPLES) >= 2
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_a_readme_example_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "search_spaces").symlink_to(ROOT / "search_spaces")
    make_experiment(tmp_path / "results" / "smoke")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()
