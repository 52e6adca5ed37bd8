"""Document sources: folders/globs of text, markdown, HTML and PDF files, JSONL/BEIR corpora, posted lists."""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from conveyor.chunking import normalise

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


class Document(BaseModel):
    """A normalised source document; `content_hash` decides whether it must be re-embedded."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    def content_hash(self, signature: str) -> str:
        """Hash of everything that shapes the stored chunks, including the indexing `signature`."""
        payload = json.dumps([signature, self.title, self.text, self.metadata], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


class Skipped(BaseModel):
    """A source item that was not indexed, and why."""

    source: str
    reason: str


class BadInput(ValueError):
    """A source item that cannot become a document; the message is the reason."""


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise BadInput("binary content")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})") from None


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _html(path: Path) -> tuple[str, str]:
    """Visible text of an HTML page, headings kept as markdown headings so chunks know their section."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path), "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        hidden.decompose()
    for heading in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        heading.replace_with(f"\n\n{'#' * int(heading.name[1])} {heading.get_text(' ', strip=True)}\n\n")
    title = soup.title.get_text(strip=True) if soup.title else ""
    return title, soup.get_text("\n")


def _pdf(path: Path) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"unreadable PDF: {exc}") from None
    return str(title), text


def load_file(path: Path, doc_id: str, max_bytes: int) -> Document:
    """One file as a Document; raises BadInput with the reason it cannot be indexed."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInput(f"larger than {max_bytes} bytes ({size})")
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        title, text = _html(path)
    elif suffix in PDF_SUFFIXES:
        title, text = _pdf(path)
    elif suffix in TEXT_SUFFIXES:
        text = _read_text(path)
        title = _markdown_title(text) if suffix in {".md", ".markdown"} else ""
    else:
        raise BadInput(f"unsupported file type {suffix or '(none)'}")
    text = normalise(text)
    if not text:
        raise BadInput("empty document")
    metadata = {"source": str(path), "format": suffix.lstrip(".")}
    return Document(id=doc_id, text=text, title=normalise(title) or path.stem, metadata=metadata)


def from_record(record: Any, where: str) -> Document:
    """A posted or JSONL record `{"id"|"_id", "text", "title"?, "metadata"?}` as a Document."""
    if not isinstance(record, dict):
        raise BadInput(f"{where}: expected a JSON object")
    doc_id = record.get("id", record.get("_id"))
    text = record.get("text")
    if not isinstance(doc_id, str | int) or str(doc_id).strip() == "":
        raise BadInput(f"{where}: missing id")
    if not isinstance(text, str):
        raise BadInput(f"{where}: missing text")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadInput(f"{where}: metadata must be an object")
    title = normalise(str(record.get("title") or ""))
    text = normalise(text)
    if not text and not title:
        raise BadInput(f"{where}: empty document")
    return Document(id=str(doc_id), text=text or title, title=title, metadata=metadata)


def _jsonl(path: Path, max_bytes: int) -> Iterator[Document | Skipped]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            if len(line) > max_bytes:
                yield Skipped(source=where, reason=f"line larger than {max_bytes} bytes")
                continue
            try:
                yield from_record(json.loads(line), where)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Skipped(source=where, reason=f"invalid JSON: {exc}")
            except BadInput as exc:
                yield Skipped(source=where, reason=str(exc).removeprefix(f"{where}: "))


def _files(source: str) -> tuple[Path, list[Path]]:
    """The root that document ids are relative to, and the files a folder or glob names."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if any(ch in source for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        return _glob_root(path), matches
    raise FileNotFoundError(f"source {source!r} is neither a folder, a glob, nor a JSONL file")


def _glob_root(pattern: Path) -> Path:
    parts = []
    for part in pattern.parts:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def iter_source(source: str, max_bytes: int) -> Iterator[Document | Skipped]:
    """Documents (and skipped items with reasons) of a folder, glob, JSONL file or BEIR corpus folder."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        path = path / "corpus.jsonl"
    if path.is_file():
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _jsonl(path, max_bytes)
            return
        root, files = path.parent, [path]
    else:
        root, files = _files(source)
    for file in files:
        doc_id = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
        try:
            yield load_file(file, doc_id, max_bytes)
        except BadInput as exc:
            yield Skipped(source=str(file), reason=str(exc))
        except OSError as exc:
            yield Skipped(source=str(file), reason=f"unreadable: {exc.strerror or exc}")


def iter_records(records: Iterable[Any]) -> Iterator[Document | Skipped]:
    """Documents posted through the API (already parsed JSON objects)."""
    for number, record in enumerate(records):
        where = f"documents[{number}]"
        try:
            yield from_record(record, where)
        except BadInput as exc:
            yield Skipped(source=where, reason=str(exc).removeprefix(f"{where}: "))
