"""Token-aware chunking with the embedding model's real tokenizer."""

from __future__ import annotations

import pytest

from conveyor.chunking import chunk_text, normalise
from conveyor.embeddings import get_encoder


@pytest.fixture(scope="module")
def tokenizer():
    return get_encoder().tokenizer


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_windows_respect_the_token_budget_and_overlap(tokenizer):
    sentences = [f"Sentence number {n} talks about topic {n * 7} in some detail." for n in range(60)]
    chunks = chunk_text(" ".join(sentences), tokenizer, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 5
    assert all(_tokens(tokenizer, c.text) <= 64 for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        last_sentence = previous.text.split(". ")[-1]
        assert current.text.startswith(last_sentence.rstrip("."))  # overlap carries whole sentences
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)  # nothing lost


def test_sections_and_overlong_sentences(tokenizer):
    text = "# Guide\n\nIntro text.\n\n## Install\n\n" + "word " * 300 + "\n\n## Use\n\nRun it."
    chunks = chunk_text(text, tokenizer, max_tokens=100, overlap_tokens=0)
    assert [c.section for c in chunks][0] == "Guide"
    assert {c.section for c in chunks} == {"Guide", "Install", "Use"}
    install = [c for c in chunks if c.section == "Install"]
    assert len(install) == 3 and all(_tokens(tokenizer, c.text) <= 100 for c in install)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_bad_overlap_and_normalisation(tokenizer):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("text", tokenizer, max_tokens=10, overlap_tokens=10)
    assert normalise("a\r\n\r\n\r\n\r\nb\x00c\t\td \x07") == "a\n\nbc d"
    assert chunk_text("   ", tokenizer) == []
