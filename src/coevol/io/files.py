"""Compatibility names: the dataset readers now live in ``coevol.io.readers``, the writers in
``coevol.io.writers``. Import from there; this module only re-exports."""

from __future__ import annotations

from coevol.io.readers import FILE_FORMATS, count_rows, parquet_schema, read_examples

__all__ = ["FILE_FORMATS", "count_rows", "parquet_schema", "read_examples"]
