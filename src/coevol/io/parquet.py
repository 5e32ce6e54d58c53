"""The Parquet sink: rows in batches into one Parquet file whose schema is fixed when writing starts."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from coevol.errors import MissingExtra
from coevol.io.guard import file_error

__all__ = ["PARQUET_BATCH", "ParquetSink", "import_pyarrow"]

PARQUET_BATCH = 1024
PARQUET_HOLD = 16


def import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtra("Parquet files", "parquet") from None
    return pyarrow, pyarrow.parquet


class ParquetSink:
    """Row batches into one Parquet file, whose schema must be fixed when writing starts.

    Types are inferred from the rows, so a column that is null in every row seen so far would get the
    null type and reject the strings that come later; batches are therefore held (up to
    ``PARQUET_HOLD``) until every column has a real type. A batch that adds columns or changes a type
    after writing started cannot be stored and raises ``DataError``.
    """

    def __init__(self, pa: Any, pq: Any, fh: IO[bytes], schema: Any, path: Path) -> None:
        self._pa = pa
        self._pq = pq
        self._fh = fh
        self._schema = schema
        self._fixed = schema is not None
        self._path = path
        self._writer: Any = None
        self._held: list[list[dict[str, Any]]] = []
        self._stored = 0

    def add(self, rows: list[dict[str, Any]], *, final: bool = False) -> None:
        if self._writer is not None:
            if rows:
                self._store(rows)
            return
        if rows:
            self._held.append(rows)
            if not self._fixed:
                self._schema = self._merge(rows)
        undecided = self._schema is None or any(_has_null(self._pa, f.type) for f in self._schema)
        if not final and not self._fixed and undecided and len(self._held) < PARQUET_HOLD:
            return
        if self._schema is None:
            self._schema = self._pa.schema([])
        self._writer = self._pq.ParquetWriter(self._fh, self._schema)
        held, self._held = self._held, []
        for batch in held:
            self._store(batch)

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._pa.ArrowInvalid, self._pa.ArrowTypeError, self._pa.ArrowNotImplementedError)

    def _span(self, count: int) -> str:
        return f"output rows {self._stored + 1}..{self._stored + count}"

    def _merge(self, rows: list[dict[str, Any]]) -> Any:
        schema = self._pa.Table.from_pylist(rows).schema
        if self._schema is None:
            return schema
        try:
            return self._pa.unify_schemas([self._schema, schema], promote_options="permissive")
        except self._errors() as e:
            raise file_error(self._path, f"{self._span(len(rows))} mix column types: {e}") from e

    def _store(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        table = pa.Table.from_pylist(rows)
        if self._fixed:
            table = self._given_schema(rows, table.schema)
        elif not table.schema.equals(self._schema):
            try:
                unified = pa.unify_schemas([self._schema, table.schema], promote_options="permissive")
                fits = unified.equals(self._schema)
                if fits:
                    table = pa.Table.from_pylist(rows, schema=self._schema)
            except self._errors() as e:
                raise file_error(
                    self._path, f"{self._span(len(rows))} do not fit the Parquet schema: {e}"
                ) from e
            if not fits:
                raise file_error(
                    self._path,
                    f"{self._span(len(rows))} do not fit the Parquet schema of the first rows "
                    f"(new or retyped columns: {_schema_diff(self._schema, unified)}); "
                    "write .jsonl instead or pass the input's schema",
                )
        self._writer.write_table(table)
        self._stored += len(rows)

    def _given_schema(self, rows: list[dict[str, Any]], inferred: Any) -> Any:
        """``rows`` as a table of the schema the caller gave: values are converted to its types (an
        ``int32`` column stays ``int32``), but a field it has no place for is an error, never dropped."""
        pa = self._pa
        unknown = _unknown_fields(pa, pa.struct(list(self._schema)), pa.struct(list(inferred)), "")
        if unknown:
            raise file_error(
                self._path,
                f"{self._span(len(rows))} do not fit the given Parquet schema (fields it lacks: "
                f"{', '.join(unknown)}); write .jsonl instead",
            )
        try:
            return pa.Table.from_pylist(rows, schema=self._schema)
        except self._errors() as e:
            raise file_error(self._path, f"{self._span(len(rows))} do not fit the Parquet schema: {e}") from e

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _is_list(pa: Any, dtype: Any) -> bool:
    return bool(
        pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
    )


def _unknown_fields(pa: Any, given: Any, inferred: Any, prefix: str) -> list[str]:
    """Struct fields of ``inferred`` (nested ones dotted) that ``given`` has no place for.

    Converting rows to a given schema silently drops such fields, so they must be found first. Other
    mismatches (a string where a number is expected) make the conversion itself fail.
    """
    if pa.types.is_struct(inferred) and pa.types.is_struct(given):
        known = {given.field(i).name: given.field(i).type for i in range(given.num_fields)}
        found: list[str] = []
        for i in range(inferred.num_fields):
            field = inferred.field(i)
            if field.name not in known:
                found.append(prefix + field.name)
            else:
                found += _unknown_fields(pa, known[field.name], field.type, f"{prefix}{field.name}.")
        return found
    if _is_list(pa, inferred) and _is_list(pa, given):
        return _unknown_fields(pa, given.value_type, inferred.value_type, f"{prefix.removesuffix('.')}[].")
    if pa.types.is_map(inferred) and pa.types.is_map(given):
        return _unknown_fields(pa, given.item_type, inferred.item_type, prefix)
    return []


def _has_null(pa: Any, dtype: Any) -> bool:
    """Whether a type is, or nests, Arrow's null type (what inference gives a column of only nulls)."""
    if pa.types.is_null(dtype):
        return True
    if pa.types.is_struct(dtype):
        return any(_has_null(pa, dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_map(dtype):
        return _has_null(pa, dtype.key_type) or _has_null(pa, dtype.item_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return _has_null(pa, dtype.value_type)
    return False


def _schema_diff(old: Any, new: Any) -> str:
    names = [f.name for f in new if old.get_field_index(f.name) < 0 or not old.field(f.name).equals(f)]
    return ", ".join(names) or "nested fields"
