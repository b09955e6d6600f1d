"""Documents to score, streamed from plain text, JSONL or Parquet, local or remote (fsspec URL):
`refine.documents`' reader (its module doc lists the formats), with the messages of `--data`
and `--max-docs` (pretrain.evaluate's options)."""

from __future__ import annotations

from collections.abc import Iterator

from refine import documents
from refine.documents import (  # noqa: F401 (re-export)
    DataError,
    MissingDataError,
    data_files,
    json_object,
)


def read_documents(location: str, max_docs: int | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of each document at `location`, the first `max_docs` of them if given.
    Raises DataError at once if `location` is missing or an empty directory."""
    if max_docs is not None and max_docs < 1:
        raise DataError(f"--max-docs must be at least 1, not {max_docs}")
    try:
        return documents.read_documents(location, max_docs)
    except MissingDataError as error:
        raise DataError(f"--data {error}") from None
