"""Where a run keeps what must outlive it: a local folder or a URI of an object store.

`run_dir` may be a local path or any URI pyarrow's filesystems open (`s3://bucket/runs/x`,
`gs://...`, `abfs://...`, `hdfs://...`); query parameters of the URI configure the filesystem
(`s3://bucket/x?endpoint_override=host:9000&scheme=http` for an S3-compatible server) and stay on
every location joined to it. Credentials come from the filesystem's usual places (for S3:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, ~/.aws, instance roles).

A location is a `Path` when local and a `str` when a URI. Writes are atomic either way: locally a
temporary file in the same folder, fsynced and renamed over the target; on an object store the
whole object in one upload, which appears only once complete. Files a run only needs on the
driver (prepared data, the MLflow sqlite store, files on their way to MLflow) live in
`local_dir(run_dir)`: run_dir itself when local, else a cache folder keyed by the URI.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union
from urllib.parse import urlsplit, urlunsplit

from maskgan_rl.errors import ConfigError, MaskGANError

if TYPE_CHECKING:  # pyarrow.fs is imported where a URI is first opened
    from pyarrow.fs import FileSystem

Location = Union[Path, str]
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")  # two letters at least: C:/ is a Windows drive
OBJECT_STORES = ("s3", "gcs")  # pyarrow filesystems without folders: an object needs no parent made first


class StorageError(MaskGANError):
    """A storage location could not be opened, read, written or listed."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    location: Location
    name: str
    mtime: float  # seconds since the epoch


def is_uri(location: str | os.PathLike) -> bool:
    """`scheme://...` other than file://, which is a local path (`NAME:s3://...` and `key=s3://...` are not URIs)."""
    found = _SCHEME.match(str(location))
    return found is not None and found.group(1).lower() != "file"


def location(where: str | os.PathLike) -> Location:
    """`where` as a location: a URI stays a str, anything else becomes a Path (file:// included)."""
    where = str(where)
    if is_uri(where):
        return where
    return Path(urlsplit(where).path) if where.startswith("file://") else Path(where)


def absolute(where: str | os.PathLike) -> Location:
    """`where` as a location that means the same from any working directory."""
    where = location(where)
    return where.resolve() if isinstance(where, Path) else where


def join(base: str | os.PathLike, *names: str) -> Location:
    """`base/names...`; on a URI the names go into its path, before any query parameters."""
    base = location(base)
    if isinstance(base, Path):
        return base.joinpath(*names)
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *names])))


def parent(where: Location) -> Location:
    """The folder holding a location (query parameters kept on a URI)."""
    if isinstance(where, Path):
        return where.parent
    parts = urlsplit(where)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/").rsplit("/", 1)[0]))


def name(where: Location) -> str:
    """The last component of a location's path."""
    return Path(urlsplit(where).path).name if isinstance(where, str) else where.name


def local_dir(run_dir: str | os.PathLike) -> Path:
    """The local folder for `run_dir`'s driver-side files: run_dir itself, or for a URI
    `$XDG_CACHE_HOME/maskgan-rl/<scheme>/<bucket>/<path>` (default `~/.cache/...`)."""
    where = location(run_dir)
    if isinstance(where, Path):
        return where
    parts = urlsplit(where)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "maskgan-rl" / parts.scheme / parts.netloc / parts.path.strip("/")


def writable_dir(path: str | os.PathLike, setting: str) -> Path:
    """Local folder `path`, created if need be; a ConfigError naming `setting` when it cannot be written to."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise ConfigError(f"{setting}: cannot write to {path} ({err.strerror}): choose a folder you can write to") from None
    return path


def check_writable(folder: str | os.PathLike, setting: str) -> Location:
    """`folder` as a location, after proving it can be written (a probe object is written and
    deleted); a one-line ConfigError naming `setting` when it cannot."""
    where = location(folder)
    if isinstance(where, Path):
        return writable_dir(where, setting)
    try:
        _open(where)
    except StorageError as err:
        raise ConfigError(
            f"{setting}: pyarrow cannot open it ({err.reason}): use a local path or a URI such as s3://bucket/folder"
        ) from None
    probe = join(where, f".write-probe-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except StorageError as err:
        raise ConfigError(
            f"{setting}: cannot write there ({err.reason}): check that the bucket exists and that credentials "
            "reach this process (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION)"
        ) from None
    return where


def exists(where: Location) -> bool:
    if isinstance(where, Path):
        return where.is_file()
    import pyarrow.fs as pafs

    filesystem, path = _open(where)
    return _call(where, filesystem.get_file_info, path).type == pafs.FileType.File


def read_bytes(where: Location) -> bytes:
    if isinstance(where, Path):
        return where.read_bytes()
    filesystem, path = _open(where)
    with _call(where, filesystem.open_input_stream, path) as stream:
        return _call(where, stream.read)


def write_bytes(where: Location, data: bytes) -> Location:
    """Write `data` to `where` atomically: readers see the old content or all of the new, never part."""
    if isinstance(where, Path):
        with replacing(where) as tmp:
            tmp.write_bytes(data)
        return where
    filesystem, path = _open(where)
    if filesystem.type_name not in OBJECT_STORES:
        _call(where, filesystem.create_dir, path.rsplit("/", 1)[0], recursive=True)
    with _call(where, filesystem.open_output_stream, path) as stream:  # one object, visible when closed
        _call(where, stream.write, data)
    return where


def upload(local_file: Path, where: Location) -> Location:
    """Copy a local file to `where` (atomically); nothing to do when `where` is that file."""
    if isinstance(where, Path) and where.resolve() == local_file.resolve():
        return where
    return write_bytes(where, local_file.read_bytes())


def delete(where: Location) -> None:
    if isinstance(where, Path):
        where.unlink(missing_ok=True)
        return
    filesystem, path = _open(where)
    _call(where, filesystem.delete_file, path)


def listdir(folder: Location, pattern: str = "*") -> list[Entry]:
    """The files in `folder` whose names match `pattern`, sorted by name ([] if there is no folder)."""
    folder = location(folder)
    if isinstance(folder, Path):
        files = [p for p in folder.glob(pattern) if p.is_file()]
        return sorted((Entry(p, p.name, p.stat().st_mtime) for p in files), key=lambda e: e.name)
    import pyarrow.fs as pafs

    filesystem, path = _open(folder)
    infos = _call(folder, filesystem.get_file_info, pafs.FileSelector(path, allow_not_found=True))
    entries = [
        Entry(join(folder, info.base_name), info.base_name, info.mtime.timestamp() if info.mtime else 0.0)
        for info in infos
        if info.type == pafs.FileType.File and fnmatch.fnmatch(info.base_name, pattern)
    ]
    return sorted(entries, key=lambda e: e.name)


@contextmanager
def local_copy(where: Location) -> Iterator[Path]:
    """A local file holding `where`'s content, for tools that read only local files (MLflow's log_artifact)."""
    if isinstance(where, Path):
        yield where
        return
    folder = Path(tempfile.mkdtemp(prefix="maskgan-"))
    try:
        copy = folder / name(where)
        copy.write_bytes(read_bytes(where))
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A private temporary name beside `path` to write to, fsynced and renamed to `path` on success:
    readers never see a half-written file, concurrent writers never share a temporary, and a crash
    mid-write leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk, or a power cut can lose the new file's name.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open(uri: str) -> tuple["FileSystem", str]:
    """(filesystem, path inside it) for a URI; one filesystem per scheme, host and query."""
    parts = urlsplit(uri)
    filesystem, root = _filesystem(urlunsplit(parts._replace(path="")))
    return filesystem, f"{root.rstrip('/')}/{parts.path.lstrip('/')}" if parts.path.strip("/") else root


@functools.lru_cache(maxsize=None)
def _filesystem(root_uri: str) -> tuple["FileSystem", str]:
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(root_uri)
    except (pa.ArrowException, ValueError, OSError) as err:
        raise StorageError(root_uri, _first_line(err)) from None


def _call(where: str, function, *args, **kwargs):
    """`function(*args)`, with a filesystem's errors as one-line StorageErrors naming `where`."""
    import pyarrow as pa

    try:
        return function(*args, **kwargs)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as err:
        raise StorageError(where, _first_line(err)) from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
