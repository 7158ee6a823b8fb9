"""
The version of the installed tcpsc, from its package metadata (the one
place it is written is pyproject.toml).
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("tcpsc")
except PackageNotFoundError:  # pragma: no cover
    # Imported from a checkout that was never installed.
    __version__ = "0+unknown"
