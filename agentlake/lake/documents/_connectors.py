"""Where enterprise documents come from: the `Connector` interface and three connectors.

A connector yields `Document` values; it never talks to Kafka or Milvus. A new
source (Snowflake, BigQuery, a wiki API) is one class with a ``source`` URI and a
``documents()`` generator; table-shaped sources reuse `rows_to_documents`, which
maps columns the same way for Parquet and Delta Lake:

| column | meaning | default |
|---|---|---|
| ``id`` or ``doc_id`` | document id | required |
| ``text`` (or ``content``, ``body``) | the text | required |
| ``tenant`` | tenant of the row | the connector's tenant |
| ``title`` | title | none |
| ``version`` | integer version | the source's version (file mtime in µs, Delta table version) |
| ``access`` | list of rules, or a comma-separated string | the connector's default access |
| ``metadata`` | map, or a JSON object as a string | {} |
| ``deleted`` | true: a tombstone (`DocumentDeleted`) | false |

Any other column goes into ``metadata`` as a string.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentlake._files import UserFileError, read_user_text
from agentlake.lake.documents._domain import PUBLIC, Document, DocumentError, valid_rule

TEXT_SUFFIXES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
JSON_SUFFIXES = {".json": "application/json"}
_ID_COLUMNS = ("id", "doc_id")
_TEXT_COLUMNS = ("text", "content", "body")
_KNOWN = {*_ID_COLUMNS, *_TEXT_COLUMNS, "tenant", "title", "version", "access", "metadata", "deleted"}


class ConnectorError(ValueError):
    """A source that cannot be read (missing, not UTF-8, malformed JSON, no id column): one line."""


@runtime_checkable
class Connector(Protocol):
    """A source of enterprise documents.

    Attributes:
        source: a stable URI naming the source (``files:/abs/path``,
            ``parquet:/abs/path``, ``delta:/abs/path``, ``snowflake://acct/db/schema/table``);
            pruning of documents gone from the source is scoped to it.
    """

    source: str

    def estimate(self) -> int | None:
        """How many documents `documents()` will yield, if cheaply known (for progress bars)."""
        ...

    def documents(self) -> Iterator[Document]:
        """Every document of the source, as of now; tombstones have ``deleted=True``.

        Raises:
            ConnectorError: the source, or one item of it, cannot be read.
        """
        ...


def _access(value: Any, default: tuple[str, ...], where: str) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        rules = [r.strip() for r in value.split(",") if r.strip()]
    elif isinstance(value, Iterable):
        rules = [str(r).strip() for r in value if str(r).strip()]
    else:
        raise ConnectorError(f"{where}: access must be a list of rules or a comma-separated string")
    for rule in rules:
        if not valid_rule(rule):
            raise ConnectorError(f"{where}: bad access rule {rule!r} (use *, user:<id> or group:<id>)")
    return tuple(rules)


def _metadata(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as e:
            raise ConnectorError(f"{where}: metadata is not a JSON object ({e})") from e
    if isinstance(value, list):  # pyarrow gives a map column as a list of (key, value) pairs
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ConnectorError(f"{where}: metadata must be an object of strings")
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in value.items()}


def _int_version(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise ConnectorError(f"{where}: version {value!r} is not an integer") from e


def document_from_mapping(
    row: Mapping[str, Any],
    *,
    tenant: str,
    source: str,
    version: int,
    where: str,
    access: tuple[str, ...] = (PUBLIC,),
    content_type: str = "text/plain",
    default_id: str | None = None,
) -> Document:
    """One row or JSON object as a `Document`, with the column rules of this module.

    Raises:
        ConnectorError: no id, no text, or a malformed access / metadata / version value.
    """
    doc_id = next((row[c] for c in _ID_COLUMNS if row.get(c) is not None), default_id)
    if doc_id is None or not str(doc_id).strip():
        raise ConnectorError(f"{where}: no document id (an 'id' or 'doc_id' field)")
    deleted = bool(row.get("deleted") or False)
    text = next((row[c] for c in _TEXT_COLUMNS if row.get(c) is not None), None)
    if text is None and not deleted:
        raise ConnectorError(f"{where}: document {doc_id!r} has no 'text' field")
    if text is not None and not isinstance(text, str):
        raise ConnectorError(f"{where}: document {doc_id!r}: text must be a string")
    meta = _metadata(row.get("metadata"), where)
    for k, v in row.items():
        if k not in _KNOWN and v is not None:
            meta.setdefault(str(k), v if isinstance(v, str) else json.dumps(v, default=str))
    title = row.get("title")
    return Document(
        doc_id=str(doc_id),
        tenant=str(row["tenant"]) if row.get("tenant") else tenant,
        text=text or "",
        version=_int_version(row["version"], where) if row.get("version") is not None else version,
        source=source,
        title=str(title) if title is not None else None,
        metadata=meta,
        access=_access(row.get("access"), access, where),
        content_type=content_type,
        deleted=deleted,
    )


def rows_to_documents(
    rows: Iterable[Mapping[str, Any]],
    *,
    tenant: str,
    source: str,
    version: int,
    access: tuple[str, ...] = (PUBLIC,),
    where: str = "row",
    start: int = 0,
) -> Iterator[Document]:
    """Documents from table rows (Parquet, Delta Lake, a warehouse cursor), numbered for errors
    from `start`."""
    for i, row in enumerate(rows, start):
        yield document_from_mapping(
            row, tenant=tenant, source=source, version=version, where=f"{where} {i}", access=access
        )


def _check_columns(names: Iterable[str], where: str) -> None:
    cols = set(names)
    if not cols & set(_ID_COLUMNS):
        raise ConnectorError(f"{where}: no 'id' or 'doc_id' column (columns: {', '.join(sorted(cols))})")
    if not cols & set(_TEXT_COLUMNS):
        raise ConnectorError(f"{where}: no 'text' column (columns: {', '.join(sorted(cols))})")


class FilesConnector:
    """A folder (or one file) of ``.txt``, ``.md`` and ``.json`` files, read recursively.

    - text and Markdown: one document per file; id = the path relative to the
      folder; a Markdown file's first ``# heading`` is its title;
    - JSON: one object or a list of objects with the table columns (``id``,
      ``text``, ``title``, ``access``, ``metadata``, ``version``); a single object
      without an id takes the file's relative path.

    Version: the file's mtime in µs unless the JSON says otherwise. Hidden files
    and other suffixes are skipped (counted in `skipped`).
    """

    def __init__(
        self, path: str | Path, tenant: str = "default", access: tuple[str, ...] = (PUBLIC,)
    ) -> None:
        self.root = Path(path).expanduser().resolve()
        if not self.root.exists():
            raise ConnectorError(f"{path}: no such file or folder")
        self.tenant = tenant
        self.access = access
        self.source = f"files:{self.root}"
        self.skipped: list[Path] = []

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        out = []
        self.skipped = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            if p.suffix.lower() in TEXT_SUFFIXES or p.suffix.lower() in JSON_SUFFIXES:
                out.append(p)
            else:
                self.skipped.append(p)
        return out

    def estimate(self) -> int | None:
        return len(self._files())

    def documents(self) -> Iterator[Document]:
        for p in self._files():
            yield from self._read(p)

    def _read(self, p: Path) -> Iterator[Document]:
        rel = p.name if self.root.is_file() else p.relative_to(self.root).as_posix()
        try:
            text = read_user_text(p)
        except UserFileError as e:
            raise ConnectorError(str(e)) from e
        version = p.stat().st_mtime_ns // 1000
        suffix = p.suffix.lower()
        if suffix in JSON_SUFFIXES:
            try:
                data = json.loads(text)
            except ValueError as e:
                raise ConnectorError(f"{p}: invalid JSON ({e})") from e
            items = data if isinstance(data, list) else [data]
            for i, item in enumerate(items):
                where = f"{p}" if not isinstance(data, list) else f"{p} item {i}"
                if not isinstance(item, Mapping):
                    raise ConnectorError(f"{where}: expected a JSON object with 'id' and 'text'")
                yield document_from_mapping(
                    item,
                    tenant=self.tenant,
                    source=self.source,
                    version=version,
                    where=where,
                    access=self.access,
                    content_type="application/json",
                    default_id=rel if not isinstance(data, list) else None,
                )
            return
        yield Document(
            doc_id=rel,
            tenant=self.tenant,
            text=text,
            version=version,
            source=self.source,
            title=_markdown_title(text) if suffix != ".txt" else None,
            metadata={"path": rel},
            access=self.access,
            content_type=TEXT_SUFFIXES[suffix],
        )


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


class ParquetConnector:
    """A Parquet file, or a folder of them (one dataset), with the table columns above.

    Version: the ``version`` column, else the newest file's mtime in µs.
    """

    def __init__(
        self, path: str | Path, tenant: str = "default", access: tuple[str, ...] = (PUBLIC,)
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise ConnectorError(f"{path}: no such file or folder")
        self.tenant = tenant
        self.access = access
        self.source = f"parquet:{self.path}"

    def _dataset(self) -> Any:
        import pyarrow.dataset as ds  # type: ignore[import-untyped]

        try:
            dataset = ds.dataset(str(self.path), format="parquet")
            _check_columns(dataset.schema.names, str(self.path))
        except ConnectorError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError...
            raise ConnectorError(f"{self.path}: not a readable Parquet dataset ({_first_line(e)})") from e
        return dataset

    def estimate(self) -> int | None:
        return int(self._dataset().count_rows())

    def documents(self) -> Iterator[Document]:
        dataset = self._dataset()
        files = [Path(f) for f in dataset.files]
        version = max((f.stat().st_mtime_ns // 1000 for f in files), default=0)
        try:
            yield from _batch_documents(self, dataset.to_batches(), version, str(self.path))
        except ConnectorError:
            raise
        except Exception as e:
            raise ConnectorError(f"{self.path}: cannot read Parquet ({_first_line(e)})") from e


def _batch_documents(
    connector: ParquetConnector | DeltaConnector, batches: Iterable[Any], version: int, where: str
) -> Iterator[Document]:
    """One document per row of the Arrow record `batches`, with `connector`'s tenant, source and
    access; a row's error names it as ``"<where> row <n>"`` (n counted from 0 across batches)."""
    offset = 0
    for batch in batches:
        rows = batch.to_pylist()
        for i, row in enumerate(rows):
            yield document_from_mapping(
                row,
                tenant=connector.tenant,
                source=connector.source,
                version=version,
                where=f"{where} row {offset + i}",
                access=connector.access,
            )
        offset += len(rows)


class DeltaConnector:
    """A Delta Lake table (the ``deltalake`` package: no Spark, no JVM), at its latest or a given version.

    Version: the ``version`` column, else the Delta table version read.
    """

    def __init__(
        self,
        path: str | Path,
        tenant: str = "default",
        access: tuple[str, ...] = (PUBLIC,),
        table_version: int | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = str(path)
        local = Path(self.uri).expanduser()
        if "://" not in self.uri:
            local = local.resolve()
            self.uri = str(local)
            if not local.exists():
                raise ConnectorError(f"{path}: no such folder")
        self.tenant = tenant
        self.access = access
        self.table_version = table_version
        self.storage_options = storage_options
        self.source = f"delta:{self.uri}"

    def _table(self) -> Any:
        from deltalake import DeltaTable

        try:
            table = DeltaTable(self.uri, version=self.table_version, storage_options=self.storage_options)
        except Exception as e:  # TableNotFoundError, DeltaError, OSError
            raise ConnectorError(f"{self.uri}: not a Delta table ({_first_line(e)})") from e
        _check_columns(table.schema().to_arrow().names, self.uri)
        return table

    def estimate(self) -> int | None:
        return int(self._table().to_pyarrow_dataset().count_rows())

    def documents(self) -> Iterator[Document]:
        table = self._table()
        version = int(table.version())
        try:
            yield from _batch_documents(self, table.to_pyarrow_dataset().to_batches(), version, self.uri)
        except ConnectorError:
            raise
        except Exception as e:
            raise ConnectorError(f"{self.uri}: cannot read the Delta table ({_first_line(e)})") from e


class SqlConnector:
    """Rows of a SQL query through any DB-API 2.0 connection, with the table columns above.

    What a warehouse needs: ``snowflake.connector.connect(...)``, a BigQuery or
    Databricks DB-API connection, or ``sqlite3`` all work unchanged.

    Args:
        connect: returns an open DB-API connection (closed after reading).
        query: a SELECT whose column names follow the table columns (alias them).
        source: a stable URI naming the query's origin, e.g. ``snowflake://acct/db/schema/kb``.
        version: version of rows without a ``version`` column (e.g. the load's timestamp).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        query: str,
        source: str,
        tenant: str = "default",
        access: tuple[str, ...] = (PUBLIC,),
        version: int = 0,
        batch: int = 1000,
    ) -> None:
        self.connect = connect
        self.query = query
        self.source = source
        self.tenant = tenant
        self.access = access
        self.version = version
        self.batch = batch

    def estimate(self) -> int | None:
        return None

    def documents(self) -> Iterator[Document]:
        try:
            conn = self.connect()
        except Exception as e:
            raise ConnectorError(f"{self.source}: cannot connect ({_first_line(e)})") from e
        try:
            cur = conn.cursor()
            try:
                cur.execute(self.query)
            except Exception as e:
                raise ConnectorError(f"{self.source}: query failed ({_first_line(e)})") from e
            names = [str(d[0]).lower() for d in cur.description or ()]
            _check_columns(names, self.source)
            offset = 0
            while rows := cur.fetchmany(self.batch):
                yield from rows_to_documents(
                    (dict(zip(names, r, strict=True)) for r in rows),
                    tenant=self.tenant,
                    source=self.source,
                    version=self.version,
                    access=self.access,
                    where=f"{self.source} row",
                    start=offset,
                )
                offset += len(rows)
        finally:
            conn.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


CONNECTORS: dict[str, type[FilesConnector] | type[ParquetConnector] | type[DeltaConnector]] = {
    "files": FilesConnector,
    "parquet": ParquetConnector,
    "delta": DeltaConnector,
}


def connector_for(
    kind: str, path: str, tenant: str = "default", access: tuple[str, ...] = (PUBLIC,)
) -> Connector:
    """The connector of `kind` (files | parquet | delta) over `path`.

    Raises:
        ConnectorError: unknown kind, or a path that does not exist.
    """
    cls = CONNECTORS.get(kind)
    if cls is None:
        raise ConnectorError(f"unknown source {kind!r}: use one of {', '.join(CONNECTORS)}")
    return cls(path, tenant=tenant, access=access)


def read_all(
    connector: Connector, max_bytes: int, progress: Callable[[], None] | None = None
) -> list[Document]:
    """Every document of `connector`, validated, before anything is published (a bad item loses nothing).

    `progress` is called once per document read.

    Raises:
        ConnectorError: a source item cannot be read, or a document fails validation.
    """
    docs: list[Document] = []
    seen: dict[tuple[str, str], int] = {}
    for doc in connector.documents():
        try:
            if not doc.deleted:
                doc.validate(max_bytes)
        except DocumentError as e:
            raise ConnectorError(f"{connector.source}: {e}") from e
        key = (doc.tenant, doc.doc_id)
        if key in seen:
            raise ConnectorError(f"{connector.source}: document id {doc.doc_id!r} appears twice")
        seen[key] = len(docs)
        docs.append(doc)
        if progress is not None:
            progress()
    return docs
