"""Progress bars with tqdm when it is installed (it comes with the ``shards`` and ``curate`` extras), silent
otherwise: :func:`progress` is what the shard writer, the synthetic corpus and curation show their work with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress"]


class _Silent:
    """Stands in for a tqdm bar when tqdm is missing or the bar is turned off."""

    def __init__(self, iterable: Iterable[Any] | None = None, **_: Any) -> None:
        self.iterable = iterable

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.iterable or ())

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)`` if ``enabled`` and tqdm imports, else a silent stand-in."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, **kwargs)
    return _Silent(iterable)
