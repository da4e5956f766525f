"""The one place iv2-data opens media for reading: :func:`open_media`, :func:`read_media_bytes`, :func:`find_media`.

Every reader (video decoding, audio, curation's segmentation and clip cutting, the shard writer, feature
extraction) goes through here, so every tool refuses and reports bad input the same way:

- local regular files only: a missing path, a directory, a FIFO or a device is refused before anything
  opens it (a FIFO without a writer would block forever), and FFmpeg may open local files only
  (``protocol_whitelist=file``), so no input — a playlist renamed ``.mp4`` — makes it fetch URLs;
- an empty file, a text file, a truncated MP4 or random bytes each get their own message naming the file;
- tags FFmpeg cannot decode (Latin-1 titles of old files) are ignored, they never make a file unreadable;
- a missing stream is reported by name (``no video stream (streams: audio)``).

Errors are :class:`MediaReadError` (an ``OSError``): :class:`~iv2_data.video.VideoReadError` and
:class:`~iv2_data.audio.AudioReadError` are its kinds. :func:`find_media` turns files and folders into the
media files inside, with one list of suffixes, and says what it skipped.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MEDIA_SUFFIXES",
    "AudioReadError",
    "MediaFile",
    "MediaReadError",
    "MediaSearch",
    "MediaSource",
    "VideoReadError",
    "find_media",
    "media_bytes",
    "open_media",
    "read_media_bytes",
]

MediaSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""A file path, or media in memory: its bytes or a seekable binary file object (e.g. a tar member)."""

# One list for every tool: which files a folder search picks up, by kind.
MEDIA_SUFFIXES: dict[str, tuple[str, ...]] = {
    "video": (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp",
              ".ogv", ".gif"),
    "audio": (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma"),
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
}


class MediaReadError(OSError):
    """A media file could not be read; the message names the file and what is wrong with it."""

    what = "media"

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cannot read {self.what} {self.path!r}: {problem}")

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable: DataLoader workers send errors back
        return (type(self), (self.path, self.problem))


class VideoReadError(MediaReadError):
    """A video could not be read (missing, empty, truncated, undecodable, no video stream...)."""

    what = "video"


class AudioReadError(MediaReadError):
    """An audio file (or a video's audio track) could not be read."""

    what = "audio"


_ERRORS: dict[str, type[MediaReadError]] = {"video": VideoReadError, "audio": AudioReadError, "media": MediaReadError}
_NOUNS = {"video": "video", "audio": "audio", "media": "media"}


def _error_type(kind: str) -> type[MediaReadError]:
    try:
        return _ERRORS[kind]
    except KeyError:
        raise ValueError(f"unknown media kind {kind!r}; expected one of {sorted(_ERRORS)}") from None


def media_bytes(data: bytes, name: str) -> BinaryIO:
    """In-memory media that error messages call ``name`` (e.g. ``shard-000001.tar:000000042.video.mp4``)."""
    buffer = io.BytesIO(data)
    buffer.name = name  # type: ignore[misc]  # read by open_media for messages
    return buffer


def _describe(source: MediaSource) -> tuple[str, str | BinaryIO]:
    """``(name for messages, what FFmpeg opens)``: bytes and file objects are read in memory."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        return str(getattr(source, "name", "<file object>")), source  # type: ignore[return-value]
    path = os.fspath(source)  # type: ignore[arg-type]
    return path, path


def _check_file(name: str, path: str, kind: str) -> int:
    """Refuse what is not a non-empty regular file, before anything opens it. Returns its size."""
    error = _error_type(kind)
    if not os.path.lexists(path):
        raise error(name, "no such file")
    if not os.path.exists(path):
        raise error(name, "no such file (a symbolic link to a missing target)")
    if os.path.isdir(path):
        raise error(name, f"is a directory, not a {_NOUNS[kind]} file")
    if not os.path.isfile(path):  # a FIFO or device would block or never end
        raise error(name, "not a regular file (a FIFO, socket or device)")
    size = os.path.getsize(path)
    if size == 0:
        raise error(name, "the file is empty (0 bytes)")
    return size


def read_media_bytes(path: str | os.PathLike[str], kind: str = "media") -> bytes:
    """The bytes of a media file (to pack into a shard), with :func:`open_media`'s guards and messages."""
    name = os.fspath(path)
    _check_file(name, name, kind)
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise _error_type(kind)(name, f"cannot read its bytes ({error.strerror or error})") from error


@dataclass
class MediaFile:
    """An opened media file: the PyAV ``container`` plus what is needed to report and reopen it.

    Use it as a context manager; :meth:`video_stream` / :meth:`audio_stream` pick the stream to decode.
    """

    name: str
    container: Any  # av.container.InputContainer
    kind: str = "video"
    _source: str | BinaryIO = field(default="", repr=False)

    @property
    def error(self) -> type[MediaReadError]:
        return _error_type(self.kind)

    def stream_kinds(self) -> list[str]:
        return sorted({s.type for s in self.container.streams}) or ["none"]

    def video_stream(self) -> Any:
        """The first video stream that is not cover art; an error naming the file if there is none or its
        codec is unknown."""
        import av

        streams = [s for s in self.container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not streams:
            raise self.error(self.name, f"no video stream (streams: {', '.join(self.stream_kinds())})")
        decodable = [s for s in streams if s.codec_context is not None]
        if not decodable:  # a damaged header, or a codec this FFmpeg build has no decoder for
            raise self.error(self.name, "its video stream's codec is unknown to FFmpeg (damaged header?)")
        return decodable[0]

    def audio_stream(self, required: bool = True) -> Any:
        """The first audio stream; ``None`` when there is none and ``required`` is False."""
        if not self.container.streams.audio:
            if not required:
                return None
            raise self.error(self.name, f"no audio stream (streams: {', '.join(self.stream_kinds())})")
        stream = self.container.streams.audio[0]
        if stream.codec_context is None:  # a damaged header, or a codec this FFmpeg has no decoder for
            raise self.error(self.name, "its audio stream's codec is unknown to FFmpeg (damaged header?)")
        return stream

    def reopen(self) -> MediaFile:
        """A fresh demuxer on the same input (decoding again from the start)."""
        return open_media(self._source, self.kind, name=self.name)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> MediaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_media(source: MediaSource, kind: str = "video", *, name: str | None = None) -> MediaFile:
    """Open a media file (or media in memory) for reading with PyAV — the only place iv2-data does.

    ``kind`` (``"video"``, ``"audio"`` or ``"media"``) decides the error type (:class:`VideoReadError`,
    :class:`AudioReadError`, :class:`MediaReadError`) and wording. Every failure to open names the file and
    the problem: missing, a directory, not a regular file, empty, a text file, a truncated MP4/Matroska/RIFF
    file, or bytes FFmpeg recognises no format in.
    """
    import av

    described, opened = _describe(source)
    name = name or described
    error = _error_type(kind)
    if isinstance(opened, str):
        _check_file(name, opened, kind)
    else:
        try:
            size = opened.seek(0, io.SEEK_END)
            opened.seek(0)
        except (OSError, ValueError, AttributeError) as e:
            raise error(name, f"the file object cannot seek ({e}); pass a path or bytes") from e
        if size == 0:
            raise error(name, "the file is empty (0 bytes)")
    try:
        # Tags are never needed, and undecodable ones must not make a file unreadable. A local file must
        # never make FFmpeg fetch URLs (a playlist renamed .mp4 would): local files only.
        container = av.open(opened, mode="r", metadata_errors="ignore", options={"protocol_whitelist": "file"})
    except av.error.InvalidDataError as e:
        raise error(name, _diagnose(opened, _NOUNS[kind])) from e
    except (av.error.FFmpegError, OSError) as e:
        raise error(name, f"FFmpeg cannot open it ({getattr(e, 'strerror', None) or e})") from e
    return MediaFile(name, container, kind, opened)


def _diagnose(source: str | BinaryIO, noun: str) -> str:
    """Say what a file FFmpeg rejects looks like, from its first bytes."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(4096)
        else:
            source.seek(0)
            head = source.read(4096)
    except OSError as e:
        return f"cannot read its bytes ({e.strerror})"
    if head[4:8] == b"ftyp":
        return "an MP4/MOV file that is truncated or damaged (its index, the 'moov' box, is missing)"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "a Matroska/WebM file that is truncated or damaged"
    if head[:4] == b"RIFF":
        return "a RIFF (AVI/WAV) file that is truncated or damaged"
    try:
        text = head.decode("utf-8")
        if sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
            return f"a text file, not {'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    except UnicodeDecodeError:
        pass
    article = "an" if noun[0] in "aeiou" else "a"
    return f"not {article} {noun}: FFmpeg recognises no container format in its bytes (garbled or random data?)"


# ---------------------------------------------------------------------------------------------------------
# Finding media files


@dataclass
class MediaSearch:
    """What :func:`find_media` found: ``files`` (as given or found, in order), ``skipped`` ``(path, why)``
    for things it passed over on purpose, and ``other_files``: how many files in the folders searched have
    another suffix."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    other_files: int = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def report(self, kinds: Iterable[str] = ("video",)) -> list[str]:
        """Lines for a command-line tool to print: one per skipped path, and a warning when nothing was found."""
        lines = [f"skipped {path}: {why}" for path, why in self.skipped]
        if not self.files:
            wanted = "/".join(kinds)
            lines.append(
                f"warning: no {wanted} files found"
                + (f" ({self.other_files} files with other suffixes)" if self.other_files else "")
                + f"; looked for {', '.join(suffixes(kinds))}"
            )
        return lines


def suffixes(kinds: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for kind in kinds:
        if kind not in MEDIA_SUFFIXES:
            raise ValueError(f"unknown media kind {kind!r}; expected some of {sorted(MEDIA_SUFFIXES)}")
        out += MEDIA_SUFFIXES[kind]
    return tuple(dict.fromkeys(out))


def find_media(paths: Iterable[str | os.PathLike[str]], kinds: Iterable[str] = ("video",)) -> MediaSearch:
    """Files as given (whatever their suffix: the user named them; a missing one is kept and fails later with
    a clear message); folders searched recursively, in sorted order, for files with a suffix of ``kinds``
    (:data:`MEDIA_SUFFIXES`, case-insensitive). The same file reached twice (another spelling, a link) is
    listed once, as first met.

    In folders, symbolic links to folders are not followed (they can loop or leave the tree; pass them
    explicitly) and dangling links are skipped; both are listed in :attr:`MediaSearch.skipped`, with FIFOs and
    devices that carry a media suffix.
    """
    kinds = tuple(kinds)
    wanted = set(suffixes(kinds))
    search = MediaSearch()
    seen: set[str] = set()

    def add(path: Path) -> None:
        identity = os.path.realpath(path)
        if identity not in seen:
            seen.add(identity)
            search.files.append(path)

    for item in paths:
        path = Path(item)
        if not path.is_dir():
            add(path)
            continue
        found: list[Path] = []
        for folder, subfolders, files in os.walk(path, followlinks=False):
            here = Path(folder)
            subfolders.sort()
            for sub in subfolders:
                if (here / sub).is_symlink():
                    why = "a symbolic link to a folder (not followed; pass it explicitly)"
                    search.skipped.append((here / sub, why))
            for name in sorted(files):
                entry = here / name
                if entry.is_symlink() and not entry.exists():
                    # os.walk lists links to folders under subfolders; a dangling link lands here
                    search.skipped.append((entry, "a dangling symbolic link"))
                    continue
                if entry.suffix.lower() not in wanted:
                    search.other_files += 1
                elif not entry.is_file():
                    search.skipped.append((entry, "not a regular file (a FIFO, socket or device)"))
                else:
                    found.append(entry)
        for entry in sorted(found):  # one sorted list per folder given, whatever the walk's order
            add(entry)
    return search
