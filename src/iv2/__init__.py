"""iv2: InternVideo2 (arXiv 2403.15377) as installable packages; this root project owns the umbrella CLI."""

from importlib.metadata import version as _version

__version__ = _version("iv2-suite")
