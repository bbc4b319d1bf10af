"""The one exception type users see.

Every error a user can cause (a missing or corrupt file, a bad flag value, a
checkpoint from another model) is raised as :class:`PixelModelsError` with a
message that names the file or flag, what was expected and what was found. The
CLI prints such messages as one paragraph, without a traceback.
"""


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
