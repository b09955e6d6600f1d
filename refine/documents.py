"""Documents streamed from plain text, JSONL or Parquet, local or remote (fsspec URL): the one
reader of `refine.quality_classifier` (training texts) and `pretrain.documents` (text to score,
to fine-tune on, ...).

    a directory          a refine run's data/ (or the run directory, whose data/ is read):
                         the `text` column of its *.parquet files, in name order
    FILE.parquet         the `text` column of every row
    FILE.jsonl, .json    one JSON object per line with a string "text" (blank lines skipped)
    any other file       plain text, one document per non-blank line (fastText's training
                         format, pretrain.finetune's `text` format)

Text files may be compressed (.gz, .bz2, .xz, .zst: fsspec infers it from the name) and are
UTF-8, a BOM allowed. Lines end at "\\n" only (a trailing "\\r" is dropped). Anything else
raises DataError naming the file (and line or row) and what was expected, when it is reached:
the documents are read lazily, so that a data set of any size streams through.

A location is a local path or a URL fsspec knows (`s3://bucket/runs/r1/data`, `gs://...`,
`memory://...`), read with credentials and endpoints from the environment (`refine.rundir`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import zlib
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from refine import arrowfile
from refine.configfile import ConfigError
from refine.rundir import RunDir

COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
JSON_SUFFIXES = (".jsonl", ".json")
TEXT_JSONL = 'one JSON object per line with a string "text"'

Location = Path | str  # a local path, or the URL of a remote one (a str)


class DataError(ConfigError):
    """Data that is missing, unreadable or not in its format: the message names the file (and
    line or row) and what was expected there."""


class MissingDataError(DataError):
    """A location that does not exist (its caller may say which option named it)."""


# --- locations: a local path or a URL ------------------------------------------------------

def is_remote(location: Location) -> bool:
    """Whether `location` is a URL of a non-local filesystem (s3://, gs://, memory://, ...)."""
    text = str(location)
    return (isinstance(location, str) and "://" in text
            and fsspec.utils.get_protocol(text) not in ("file", "local"))


def as_location(value: str) -> Location:
    """A command-line location: a URL of a remote filesystem stays a string (Path would fold
    its `//`), anything else is a Path (`file://` dropped)."""
    if is_remote(value):
        return value
    return Path(value.removeprefix("file://"))


def exists(location: Location, *parts: str) -> bool:
    if is_remote(location):
        return RunDir(location).exists(*parts)
    return Path(location, *parts).exists()


def file_name(location: str | Path) -> str:
    """The last part of a local path or a URL."""
    return posixpath.basename(str(location).rstrip("/"))


def parquet_files(data_dir: Location) -> list[str]:
    """A refine run's kept-document shards in a stable (sorted by name) order: absolute local
    paths, or URLs when `data_dir` is remote."""
    if is_remote(data_dir):
        store = RunDir(data_dir)
        files = [store.fs.unstrip_protocol(path) for path in store.files("")]
        if not files and not store.exists():
            raise FileNotFoundError(f"{store.url()} does not exist (expected a refine run's "
                                    "data/ directory)")
    else:
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise FileNotFoundError(f"{data_dir} does not exist (expected a refine run's data/ "
                                    "directory)")
        files = [os.path.abspath(path) for path in sorted(data_dir.glob("*.parquet"))]
    if not files:
        raise FileNotFoundError(f"no *.parquet in {data_dir}")
    return files


@contextlib.contextmanager
def open_parquet(location: str | Path) -> Iterator[pq.ParquetFile]:
    """A ParquetFile over a local path or a remote object, streamed (see refine.arrowfile)."""
    fs, path = fsspec.core.url_to_fs(str(location))
    with arrowfile.parquet_file(fs, path) as parquet:
        yield parquet


# --- documents -----------------------------------------------------------------------------

def json_object(line: str, where: str, expected: str, hint: str = "") -> dict:
    """One JSONL line's object; DataError at `where` (FILE:LINE) when it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object{hint}; expected {expected}")
    return row


def _is_dir(location: str) -> bool:
    fs, path = fsspec.core.url_to_fs(location)
    return fs.isdir(path)


def data_files(location: str) -> list[str]:
    """The files `location` stands for (see the module doc); MissingDataError if it does not
    exist, DataError if it is a directory without any."""
    text = str(location).rstrip("/") if is_remote(location) else str(as_location(location))
    if not exists(as_location(text)):
        raise MissingDataError(f"{location} does not exist")
    if not _is_dir(text):
        return [text]
    data_dir = text
    if not _has_parquet(text) and exists(as_location(text), "data"):
        data_dir = posixpath.join(text, "data")  # RUN rather than RUN/data
    try:
        return parquet_files(as_location(data_dir))
    except FileNotFoundError as error:
        raise DataError(f"{error} (a directory is read as a refine run's data/)") from None


def _has_parquet(directory: str) -> bool:
    fs, path = fsspec.core.url_to_fs(directory)
    return any(name.endswith(".parquet") for name in fs.ls(path, detail=False))


def _format(path: str) -> str:
    name = file_name(path).lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        return "parquet"
    return "jsonl" if name.endswith(JSON_SUFFIXES) else "text"


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 text file, local or remote."""
    number = 0
    try:
        raw = fsspec.open(path, "rb", compression="infer").open()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="\n") as stream:
        try:
            for number, line in enumerate(stream, start=1):  # noqa: B007 (used below)
                yield number, line.removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise DataError(f"{path}:{number + 1}: not UTF-8 text; save the file as UTF-8") \
                from None
        except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt archive
            raise DataError(f"{path}:{number + 1}: cannot read on: {error}") from None


def _jsonl_documents(path: str) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        row = json_object(line, f"{path}:{number}", TEXT_JSONL)
        if not isinstance(row.get("text"), str):
            raise DataError(f'{path}:{number}: "text" missing or not a string (keys: '
                            f"{sorted(row)}); expected {TEXT_JSONL}")
        yield f"{file_name(path)}:{number}", row["text"]


def _text_documents(path: str) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path):
        if line.strip():
            yield f"{file_name(path)}:{number}", line


def _parquet_documents(path: str, batch_rows: int = 256) -> Iterator[tuple[str, str]]:
    try:
        with open_parquet(path) as parquet:
            names = parquet.schema_arrow.names
            if "text" not in names:
                raise DataError(f"{path} has no 'text' column (columns: {names})")
            row = 0
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=["text"]):
                for text in batch.column("text").to_pylist():
                    if not isinstance(text, str):
                        raise DataError(f"{path}: row {row}: text is {text!r}, not a string")
                    yield f"{file_name(path)}:{row}", text
                    row += 1
    except DataError:
        raise
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable Parquet file: {error}") from None


READERS = {"parquet": _parquet_documents, "jsonl": _jsonl_documents, "text": _text_documents}


def read_documents(location: str, max_docs: int | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of each document at `location`, the first `max_docs` of them if given.
    Raises MissingDataError or DataError at once if `location` is missing or an empty
    directory."""
    files = data_files(location)
    return _stream(files, max_docs)


def _stream(files: list[str], max_docs: int | None) -> Iterator[tuple[str, str]]:
    if max_docs is not None and max_docs < 1:
        return
    count = 0
    for path in files:
        for document in READERS[_format(path)](path):
            yield document
            count += 1
            if count == max_docs:
                return
