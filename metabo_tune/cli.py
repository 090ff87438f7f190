"""What every command line shares: bad arguments end in one `error:` line and exit code 2, as every other bad
input does (argparse's own parser prints its usage block and `prog: error:` first), and an output folder is checked
before any work is done."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from metabo_tune.config import ConfigError


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def output_folder(path: str | Path, option: str) -> Path:
    """`path` as a folder to write results into: an existing file there is refused by name."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; choose another {option}")
    return path
