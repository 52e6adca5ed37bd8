"""From documents to table rows: chunking, the indexing signature, embedding into an Arrow batch."""

from __future__ import annotations

import json

import pyarrow as pa

from conveyor.chunking import chunk_text
from conveyor.embeddings import embed, get_encoder
from conveyor.knowledge import chunk_schema
from conveyor.loaders import Document
from conveyor.settings import get_settings


def signature() -> str:
    """Everything besides a document's content that shapes its stored chunks: changing it re-embeds all."""
    s = get_settings()
    return f"{s.embedding_model}|chunk={s.chunk_tokens}/{s.chunk_overlap_tokens}|v1"


def chunk_rows(document: Document, content_hash: str) -> list[dict]:
    """Rows (without vectors) for one document; chunk ids change with the content hash, so a new
    version's chunks never collide with the old ones they replace."""
    s = get_settings()
    chunks = chunk_text(document.text, get_encoder().tokenizer, s.chunk_tokens, s.chunk_overlap_tokens)
    metadata = json.dumps(document.metadata, sort_keys=True, default=str)
    rows = []
    for chunk in chunks:
        context = "\n".join(part for part in (document.title, chunk.section, chunk.text) if part)
        rows.append(
            {
                "chunk_id": f"{document.id}#{content_hash[:12]}-{chunk.index}",
                "doc_id": document.id,
                "chunk_index": chunk.index,
                "title": document.title,
                "section": chunk.section,
                "text": chunk.text,
                "search_text": context,
                "metadata": metadata,
                "content_hash": content_hash,
            }
        )
    return rows


def embed_rows(rows: list[dict]) -> pa.Table:
    """The rows as an Arrow table with the embedding of each chunk's title + section + text."""
    vectors = embed([row["search_text"] for row in rows])
    schema = chunk_schema(get_encoder().get_embedding_dimension())
    columns = {name: [row[name] for row in rows] for name in schema.names if name != "vector"}
    columns["vector"] = list(vectors)
    return pa.Table.from_pydict(columns, schema=schema)
