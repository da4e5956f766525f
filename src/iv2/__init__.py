"""iv2: InternVideo2 (arXiv 2403.15377) as installable packages; this root project owns the umbrella CLI."""

__version__ = "0.1.0"
