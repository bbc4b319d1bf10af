"""The installed distribution's version (``pixelmodels.__version__``, ``pixelmodels --version``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pixelmodels")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
