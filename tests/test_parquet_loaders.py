"""Kept and rejected Parquet of a real run load in datasets, pandas, polars and DuckDB, with the
metrics still there (README: "Loading the output")."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from refine.shards import METRICS, metrics_dict


def _first_metrics(run, sub: str) -> tuple[str, dict[str, float]]:
    files = sorted((run / sub).glob("*.parquet"))
    assert files, f"no {sub}/ files"
    row = pq.read_table(files[0]).slice(0, 1).to_pylist()[0]
    return row["id"], metrics_dict(row["metrics"])


@pytest.mark.slow
@pytest.mark.parametrize("sub", ["data", "rejected"])
def test_every_loader_reads_the_rows_and_their_metrics(refine_run, sub):
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    files = sorted(str(p) for p in (refine_run / sub).glob("*.parquet"))
    expected = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    first_id, first_metrics = _first_metrics(refine_run, sub)
    assert first_metrics and pq.read_schema(files[0]).field("metrics").type == METRICS

    # datasets: the README's own line
    loaded = datasets.load_dataset("parquet", data_files=f"{refine_run}/{sub}/*.parquet",
                                   split="train", cache_dir=str(refine_run.parent / "hf-cache"))
    assert len(loaded) == expected
    row = next(r for r in loaded if r["id"] == first_id)
    assert metrics_dict(row["metrics"]) == first_metrics

    frame = pd.concat(pd.read_parquet(f) for f in files)
    assert len(frame) == expected
    cell = frame.set_index("id").loc[first_id, "metrics"]
    assert {e["key"]: e["value"] for e in cell} == first_metrics

    lazy = pl.read_parquet(files)
    assert lazy.height == expected
    entries = lazy.filter(pl.col("id") == first_id)["metrics"][0].to_list()
    assert metrics_dict(entries) == first_metrics

    con = duckdb.connect()
    got = con.execute(f"select count(*) from read_parquet({files!r})").fetchone()[0]
    assert got == expected
    key = next(iter(first_metrics))
    value = con.execute(
        f"select map_from_entries(metrics)[?] from read_parquet({files!r}) where id = ?",
        [key, first_id]).fetchone()[0]
    assert value == first_metrics[key]
