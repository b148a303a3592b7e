"""The daemon on the shape node: Redis queue → OpenAI-compatible model server → reply in S3."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tinyllama-shape")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0+unknown"
