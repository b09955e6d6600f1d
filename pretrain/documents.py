"""Documents to score, streamed from plain text, JSONL or Parquet, local or remote (fsspec URL).

    a directory          a refine run's data/ (or the run directory, whose data/ is read):
                         the `text` column of its *.parquet files, in name order
    FILE.parquet         the `text` column of every row
    FILE.jsonl, .json    one JSON object per line with a string "text" (blank lines skipped)
    any other file       plain text, one document per non-blank line (pretrain.finetune's
                         `text` format)

Text files may be compressed (.gz, .bz2, .xz, .zst: fsspec infers it from the name) and are
UTF-8, a BOM allowed. Lines end at "\\n" only (a trailing "\\r" is dropped). Anything else
raises DataError naming the file (and line or row) and what was expected, when it is reached:
the documents are read lazily, so that a data set of any size streams through.
"""

from __future__ import annotations

import io
import json
import posixpath
import zlib
from collections.abc import Iterator

import fsspec

from pretrain.config import ConfigError
from pretrain.files import as_location, exists, file_name, is_remote, open_parquet, parquet_files

COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
JSON_SUFFIXES = (".jsonl", ".json")
TEXT_JSONL = 'one JSON object per line with a string "text"'


class DataError(ConfigError):
    """Data that is missing, unreadable or not in its format: the message names the file (and
    line or row) and what was expected there."""


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
    """The files `location` stands for (see the module doc); DataError if there are none."""
    text = str(location).rstrip("/") if is_remote(location) else str(as_location(location))
    if not exists(as_location(text)):
        raise DataError(f"--data {location} does not exist")
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
    Raises DataError at once if `location` is missing or an empty directory."""
    if max_docs is not None and max_docs < 1:
        raise DataError(f"--max-docs must be at least 1, not {max_docs}")
    files = data_files(location)
    return _stream(files, max_docs)


def _stream(files: list[str], max_docs: int | None) -> Iterator[tuple[str, str]]:
    count = 0
    for path in files:
        for document in READERS[_format(path)](path):
            yield document
            count += 1
            if count == max_docs:
                return
