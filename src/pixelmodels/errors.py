"""The one exception type users see, and how the command line reports it.

Every error a user can cause (a missing or corrupt file, a bad flag value, a
checkpoint from another model) is raised as :class:`PixelModelsError` with a
message that names the file or flag, what was expected and what was found. The
CLI prints such messages as one paragraph, without a traceback.
"""

import sys


class PixelModelsError(Exception):
    """A user-facing error: bad input, missing data, mismatched checkpoint."""


class DatasetError(PixelModelsError):
    """A dataset is missing, corrupt or asked for in an unsupported way."""


class TrainingInterrupted(PixelModelsError):
    """SIGTERM or SIGINT arrived during training; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception (or text) for a message: one line, at most ``limit`` characters.

    Messages quote exceptions raised on file contents, which may hold newlines
    and arbitrary bytes; a user-facing message stays one paragraph.
    """
    text = " ".join(str(exc)[: 2 * limit].split())  # a message quoting megabytes of a file: its start
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_command(prog: str, handler, argv: list[str], debug: bool = False) -> int:
    """``handler(argv)``'s exit code; a user's error (:class:`PixelModelsError`, a failed read or write) is
    one line ``PROG: error: ...`` on stderr and exit code 2 (or the error's own), Ctrl-C exit code 130.
    With ``debug`` the error propagates with its traceback instead."""
    try:
        return handler(argv)
    except PixelModelsError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:  # a plain write (grid, .npz, logs) that failed: disk full, read-only, ...
        if debug:
            raise
        print(f"{prog}: error: {e.filename or ''}: could not write or read ({e.strerror or e})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
