"""Paths that may be local or on shared storage (s3://, gs://, hdfs://, file://), through pyarrow.fs.

A sweep on a cluster writes results, checkpoints and the stage I cache to a URI every node can reach;
a laptop run uses plain paths. Code above this module does not care which.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    uri = str(uri)
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def unwritable_dir(uri: str) -> str | None:
    """Why a folder cannot be made or written at `uri`, or None when it can (shared storage is not
    checked here: its permissions show at the first write)."""
    if is_remote(uri):
        return None
    path = Path(resolve(uri)[1])
    if path.exists() and not path.is_dir():
        return "it is an existing file, not a folder"
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole file so a reader never sees half of it: temp file + rename locally; object stores
    publish an object only when its upload completes."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local folder to `uri` (a no-op copy when both are the same local folder)."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem) and os.path.abspath(local_dir) == path:
        return
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_dir(uri: str, local_dir: str | Path) -> Path:
    fs, path = resolve(uri)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return Path(local_dir)


def local_dir_for(uri: str, scratch: str | Path | None = None) -> Path:
    """A local folder holding `uri`'s contents: the folder itself when local, else a downloaded copy."""
    if not is_remote(uri):
        return Path(resolve(uri)[1])
    scratch = Path(scratch or tempfile.gettempdir()) / f"hadskip-{uuid.uuid4().hex[:8]}"
    return download_dir(uri, scratch)


def move(src: str, dst: str) -> None:
    """Move a file or a folder tree to `dst` (same filesystem): a rename locally; object stores, which
    cannot rename a folder, copy it and delete the original."""
    fs, path = resolve(src)
    _, target = resolve(dst)
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem) or fs.get_file_info(path).type == pafs.FileType.File:
        fs.move(path, target)
        return
    fs.create_dir(target, recursive=True)
    pafs.copy_files(path, target, source_filesystem=fs, destination_filesystem=fs)
    fs.delete_dir(path)


def delete(uri: str) -> None:
    """Remove a file or a folder tree; nothing to do when it does not exist."""
    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)
