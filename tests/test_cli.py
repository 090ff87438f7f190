import pytest

from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import ConfigError


def test_a_bad_argument_is_one_error_line_and_exit_code_2(capsys):
    parser = ArgumentParser(prog="python -m metabo_tune.example")
    parser.add_argument("--jobs", type=int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--jobs", "many"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: argument --jobs: invalid int value: 'many' "
                                       "(see python -m metabo_tune.example --help)\n")


def test_an_output_folder_may_exist_or_not_but_not_be_a_file(tmp_path):
    assert output_folder(tmp_path, "--out") == tmp_path
    assert output_folder(tmp_path / "new", "--out") == tmp_path / "new"
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ConfigError, match=r"--storage .*notes.txt: is a file, not a folder; choose another --storage"):
        output_folder(tmp_path / "notes.txt", "--storage")
