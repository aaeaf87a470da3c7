"""The run directory's Parquet streams: chunks in, row groups of about ROW_GROUP rows out,
every record read back as written."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from timelines import as_chunk

from tracer.rundir import COLUMNS, ROW_GROUP, TimelineWriter


def test_small_chunks_make_few_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "timeline.parquet"
    writer = TimelineWriter(path)
    written = []
    for c in range(300):  # 300 chunks of 1,000 records: 300,000 rows
        chunk = []
        for i in range(1000):
            n = c * 1000 + i
            chunk += [n * 10, 1 + n % 26, n % 7, n % 200, n, -n]
        writer.write(c % 3, as_chunk(chunk))
        written.append((c % 3, chunk))
    writer.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 300_000
    # the first chunk that reaches ROW_GROUP rows ends a row group; close writes the rest
    assert ROW_GROUP < 263_000 and meta.num_row_groups == 2
    assert pq.ParquetFile(path).metadata.row_group(0).num_rows == 263_000
    table = pq.read_table(path)
    assert table.column("policy").to_pylist() == [p for p, chunk in written
                                                  for _ in range(len(chunk) // 6)]
    for k, name in enumerate(COLUMNS):
        assert table.column(name).to_pylist() == [v for _, chunk in written
                                                  for v in chunk[k::6]]
