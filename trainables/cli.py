"""What the command-line tools share: bad input ends with one line on stderr and exit 2."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `error:` line, not the whole usage text.

    The train CLI's usage lists every setting (over 30 lines), which buries the one
    line that matters; `--help` still prints it all. Subparsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
