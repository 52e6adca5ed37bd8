"""Token-aware chunking: sentence-packed windows with overlap, each tagged with its section heading."""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast

HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n{2,}")


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its text, the heading it sits under and its position."""

    index: int
    text: str
    section: str


def normalise(text: str) -> str:
    """Unicode-safe whitespace clean-up: unified newlines, no control characters, no trailing spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", text)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _sections(text: str) -> list[tuple[str, str]]:
    """Split markdown-style text into (heading, body) pairs; text before any heading has heading ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.split("\n"):
        match = HEADING.match(line)
        if match:
            sections.append((match.group(2), []))
        else:
            sections[-1][1].append(line)
    return [(heading, "\n".join(lines).strip()) for heading, lines in sections if "\n".join(lines).strip()]


def _units(body: str, tokenizer: PreTrainedTokenizerFast, max_tokens: int) -> list[tuple[str, int]]:
    """Sentences with their token counts; a sentence longer than `max_tokens` is cut at token boundaries."""
    sentences = [s.strip() for s in SENTENCE_END.split(body) if s and s.strip()]
    if not sentences:
        return []
    encoded = tokenizer(sentences, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    units: list[tuple[str, int]] = []
    for sentence, offsets in zip(sentences, encoded["offset_mapping"], strict=True):
        if len(offsets) <= max_tokens:
            units.append((sentence, len(offsets)))
            continue
        for start in range(0, len(offsets), max_tokens):
            window = offsets[start : start + max_tokens]
            units.append((sentence[window[0][0] : window[-1][1]], len(window)))
    return units


def chunk_text(
    text: str, tokenizer: PreTrainedTokenizerFast, max_tokens: int = 128, overlap_tokens: int = 32
) -> list[Chunk]:
    """Pack whole sentences into windows of at most `max_tokens` tokens, repeating about
    `overlap_tokens` tokens of trailing sentences at the start of the next window."""
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be in [0, max_tokens)")
    chunks: list[Chunk] = []
    for heading, body in _sections(text):
        window: list[tuple[str, int]] = []
        size = 0
        for unit in _units(body, tokenizer, max_tokens):
            if window and size + unit[1] > max_tokens:
                chunks.append(Chunk(len(chunks), " ".join(u[0] for u in window), heading))
                carried: list[tuple[str, int]] = []
                for previous in reversed(window):
                    if sum(u[1] for u in carried) + previous[1] > overlap_tokens:
                        break
                    carried.insert(0, previous)
                if sum(u[1] for u in carried) + unit[1] > max_tokens:
                    carried = []
                window, size = carried, sum(u[1] for u in carried)
            window.append(unit)
            size += unit[1]
        if window:
            chunks.append(Chunk(len(chunks), " ".join(u[0] for u in window), heading))
    return chunks
