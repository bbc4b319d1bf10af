"""Downloads of published dataset files, checked against their published MD5.

A file is streamed into a temporary file next to its destination, its MD5 is
compared with the published one, and only then is it renamed into place, so an
interrupted or corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from ..errors import DatasetError

TIMEOUT_S = 10  # seconds without an answer (connect or read) before giving up
CHUNK = 1 << 20  # bytes read at a time


def cache_dir(name: str) -> Path:
    """Where dataset ``name`` is looked for and downloaded to when no root is given:
    ``$PIXELMODELS_DATA/<name>``, else ``$XDG_CACHE_HOME/pixelmodels/<name>``
    (``~/.cache/pixelmodels/<name>``)."""
    if os.environ.get("PIXELMODELS_DATA"):
        return Path(os.environ["PIXELMODELS_DATA"]).expanduser() / name
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pixelmodels" / name


def downloads_disabled() -> bool:
    """True when the environment variable ``PIXELMODELS_NO_DOWNLOAD`` is set (not "" or "0")."""
    return os.environ.get("PIXELMODELS_NO_DOWNLOAD", "") not in ("", "0")


def download(url: str, md5: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` if its MD5 is ``md5``.

    Raises:
        DatasetError: the downloaded bytes have another MD5 (nothing is left behind).
        OSError: the network or the disk failed (``urllib.error.URLError`` is one).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"pixelmodels: downloading {url} to {dest}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != md5:
            raise DatasetError(
                f"download of {url} is corrupt: expected MD5 {md5}, found "
                f"{digest.hexdigest()}; nothing was saved to {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
