"""phone-sim: a software Digium/Sangoma D-Series desk phone."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("phone-sim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
