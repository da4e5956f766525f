"""Writing outputs so that no crash leaves a half-written one: :func:`atomic_write` and :class:`JsonlManifest`.

:func:`atomic_write` writes under a temporary name this module owns, in the target's folder
(``.NAME.tmp-<pid>-<random>``), fsyncs, and renames over the target only when the writer finished. What a
``kill -9`` leaves behind is recognisable by that name, and :func:`remove_leftovers` deletes it on a later run
(including whatever a wrapped writer left inside it, e.g. safetensors' own hidden temporary file). Files get
the permissions the umask gives any new file (``0o666 & ~umask``), not the ``0o600`` of :mod:`tempfile`.

:class:`JsonlManifest` is an append-only JSON Lines log, one object per line, flushed as work finishes, so a
killed job keeps its record; rows can be keyed (the latest row of a key wins) and the file compacted or
rewritten atomically. A line cut short by a kill is skipped on reading and never glued to the next row.

:func:`file_sha256` identifies a file by its content (a checkpoint a run's outputs were made with), hashing
it once and remembering the digest by (path, size, modification time), so a rerun does not read gigabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["JsonlManifest", "atomic_write", "cache_dir", "file_sha256", "remove_leftovers", "unfinished_writes"]

# `.NAME.tmp-PID-RANDOM`: a write in progress (or killed). `.NAME.old-PID-RANDOM`: the previous version of a
# directory set aside while the new one is renamed into place.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _temp_name(name: str, what: str = "tmp") -> str:
    return f".{name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` sets it to read it)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (best effort for directories: not every filesystem allows it)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str | None = None,
    *,
    encoding: str | None = None,
    directory: bool = False,
) -> Iterator[Any]:
    """Write ``path`` all at once or not at all.

    - ``mode`` ``"w"`` / ``"wb"``: yields a file object; ``with atomic_write(p, "w") as f: json.dump(x, f)``.
    - ``mode=None``: yields a temporary *path* for writers that want one (safetensors ``save_file``,
      ``torch.save``, PyAV ``av.open(p, "w")``); it has the target's name (and suffix), inside a temporary
      folder of its own, so whatever the writer leaves beside it is cleaned up with it.
    - ``directory=True``: yields a temporary directory to fill (a checkpoint); it replaces ``path`` as a
      whole. The previous version is set aside as ``.NAME.old-…`` for the instant of the swap, and
      :func:`remove_leftovers` restores it if a crash fell in between.

    The target is renamed into place only when the block ends without an exception; on an exception the
    temporary files are removed and an existing ``path`` is left untouched. Data and folder are fsynced
    before and after the rename. Parent folders are created.
    """
    target = Path(path)
    if directory and mode is not None:
        raise ValueError("atomic_write(directory=True) yields a folder: mode must be None")
    if mode is not None and mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write mode must be 'w', 'wt', 'wb' or None (a path), got {mode!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(_temp_name(target.name))
    try:
        if mode is not None:
            # O_EXCL + 0o666: the umask decides the permissions, as for any file the user creates.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        elif directory:
            temp.mkdir(0o777)
            yield temp
            _replace_directory(temp, target)
        else:
            temp.mkdir(0o777)
            inner = temp / target.name
            yield inner
            if not inner.is_file():
                raise FileNotFoundError(f"the writer wrote nothing to {inner} (the temporary name for {target})")
            # Writers that go through tempfile (safetensors) create 0o600 files: give the usual permissions.
            os.chmod(inner, 0o666 & ~_umask())
            _fsync(inner)
            os.replace(inner, target)
            temp.rmdir()
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        raise
    _fsync(target.parent)


def _replace_directory(temp: Path, target: Path) -> None:
    for entry in temp.rglob("*"):
        if entry.is_file():
            _fsync(entry)
    _fsync(temp)
    if not target.exists():
        os.replace(temp, target)
        return
    previous = target.with_name(_temp_name(target.name, "old"))
    os.replace(target, previous)
    os.replace(temp, target)
    shutil.rmtree(previous, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def unfinished_writes(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """The temporary files and folders of :func:`atomic_write` in ``folder`` (for target ``name``, or any):
    writes in progress, or left by a process that died (which :func:`remove_leftovers` deletes)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(
        entry
        for entry in root.iterdir()
        if (match := _TEMP.match(entry.name)) and (name is None or match["name"] == name)
    )


def remove_leftovers(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Delete what :func:`atomic_write` calls in ``folder`` (for target ``name``, or any) left behind when their
    process died: temporary files and folders whose writer's pid is no longer running on this machine.

    A directory swap cut short (``.NAME.old-…`` present, ``NAME`` missing) is rolled back: the previous
    version is renamed back into place. Returns the paths removed or restored. Writes of live processes are
    left alone; on a disk shared by several machines, call it where no other machine writes to ``folder``.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    handled = []
    for entry in sorted(root.iterdir()):
        match = _TEMP.match(entry.name)
        if not match or (name is not None and match["name"] != name) or _pid_alive(int(match["pid"])):
            continue
        final = root / match["name"]
        if match["what"] == "old" and not final.exists():
            os.replace(entry, final)  # the new version never arrived: keep the previous one
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        handled.append(entry)
    return handled


class JsonlManifest:
    """An append-only JSON Lines file: one JSON object per line.

    ``key`` names the field that identifies an item (an input path, a clip); :attr:`latest` maps each key to
    its newest row, which is what a rerun consults (``item in manifest``, ``manifest.get(item)``). Without a
    key it is a plain log (metrics). Reading skips lines that are not complete JSON objects — a kill cuts the
    last line short — and counts them in :attr:`unreadable_lines`; the next :meth:`append` starts on a fresh
    line, so a torn line never corrupts the row after it. :meth:`compact` (one row per key) and
    :meth:`rewrite` replace the file atomically.
    """

    def __init__(self, path: str | os.PathLike[str], key: str | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.latest: dict[Any, dict[str, Any]] = {}
        self.unreadable_lines = 0
        self._handle: IO[str] | None = None
        self._needs_newline = False
        if self.path.is_file():
            data = self.path.read_bytes()
            self._needs_newline = bool(data) and not data.endswith(b"\n")
            # split on "\n" only: str.splitlines() also splits at U+2028 and friends, which JSON strings may hold
            for line in data.decode("utf-8", errors="replace").split("\n"):
                if line.strip():
                    self._take(line)

    def _take(self, line: str) -> None:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or (self.key is not None and self.key not in row):
            self.unreadable_lines += 1
            return
        self._remember(row)

    def _remember(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.key is not None:
            self.latest[row[self.key]] = row

    def __contains__(self, item: object) -> bool:
        return item in self.latest

    def get(self, item: Any, default: Any = None) -> Any:
        return self.latest.get(item, default)

    def __len__(self) -> int:
        return len(self.latest) if self.key is not None else len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The latest row per key (keyed), or every row (a log), in file order."""
        return iter(list(self.latest.values()) if self.key is not None else list(self.rows))

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it (a killed process keeps every row appended before)."""
        if self.key is not None and self.key not in row:
            raise KeyError(f"a row of {self.path} needs the key {self.key!r}, got {sorted(row)}")
        line = json.dumps(row, ensure_ascii=False)
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._needs_newline:
            self._handle.write("\n")
            self._needs_newline = False
        self._handle.write(line + "\n")
        self._handle.flush()
        self._remember(row)

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the whole file with ``rows`` (atomically), e.g. to drop records past a resumed step."""
        self.close()
        rows = list(rows)
        with atomic_write(self.path, "w", encoding="utf-8") as sink:
            for row in rows:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows, self.latest, self._needs_newline = [], {}, False
        for row in rows:
            self._remember(row)

    def compact(self) -> None:
        """Keep one row per key, the latest (in the order keys first appeared)."""
        if self.key is None:
            raise ValueError(f"{self.path}: compact() needs a keyed manifest")
        self.rewrite(list(self.latest.values()))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlManifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cache_dir() -> Path:
    """Where iv2 keeps small caches: ``$IV2_CACHE_DIR``, else ``$XDG_CACHE_HOME/iv2``, else ``~/.cache/iv2``."""
    if os.environ.get("IV2_CACHE_DIR"):
        return Path(os.environ["IV2_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iv2"


_DIGESTS = "sha256.json"


def file_sha256(path: str | os.PathLike[str], *, cache: bool = True) -> str:
    """The SHA-256 (hex) of a file's content.

    With ``cache`` the digest is remembered in ``cache_dir()/sha256.json`` under the file's real path, with its
    size and modification time (ns): a file that has not changed is not read again; one rewritten in place
    (another size or time) is hashed anew. A cache that cannot be read or written is ignored.
    """
    real = os.path.realpath(path)
    info = os.stat(real)
    stamp = [info.st_size, info.st_mtime_ns]
    store = cache_dir() / _DIGESTS
    known: dict[str, Any] = {}
    if cache:
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(store.read_text(encoding="utf-8"))
        entry = known.get(real) if isinstance(known, dict) else None
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    if cache:
        known = known if isinstance(known, dict) else {}
        known[real] = {"stamp": stamp, "sha256": value}
        with contextlib.suppress(OSError), atomic_write(store, "w", encoding="utf-8") as sink:
            json.dump(known, sink)
    return value
