"""The gateway over real LanceDB tables: parallel domains, fused ranking, passages, clear errors."""

from __future__ import annotations

import pytest

from conveyor import gateway
from flows.index_documents import index_documents

ASTRONOMY = [
    {"id": "moon", "title": "The Moon", "text": "The Moon orbits the Earth every 27 days and causes tides."},
    {"id": "mars", "title": "Mars", "text": "Mars is a red planet with the tallest volcano, Olympus Mons."},
]
COOKING = [
    {"id": "bread", "title": "Sourdough", "text": "Sourdough bread rises with a wild yeast starter."},
    {"id": "pasta", "title": "Pasta", "text": "Boil pasta in salted water until it is al dente."},
    {"id": "tides-cafe", "title": "Tides cafe", "text": "Tides cafe serves soup by the harbour."},
]


@pytest.fixture(scope="module")
def domains() -> list[str]:
    index_documents(domain="astronomy", documents=ASTRONOMY)
    index_documents(domain="cooking", documents=COOKING)
    return ["astronomy", "cooking"]


def test_searches_all_domains_and_merges(domains):
    assert set(domains) <= set(gateway.list_domains())
    hits = gateway.search("what makes bread rise", k=10)  # every domain, including other tests' ones
    ours = [h for h in hits if h.domain in domains]
    assert ours[0].doc_id == "bread" and ours[0].domain == "cooking"
    assert len({(h.domain, h.doc_id) for h in hits}) == len(hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    ranked = gateway.search("ocean tides caused by the moon", domains=domains, k=5)
    assert ranked[0].doc_id == "moon"
    assert {h.domain for h in ranked} == {"astronomy", "cooking"}  # all 5 documents, both domains


def test_restricts_to_requested_domains(domains):
    hits = gateway.search("ocean tides caused by the moon", domains=["cooking"], k=10)
    assert {h.domain for h in hits} == {"cooking"}
    assert len(hits) == 3
    passage = hits[0]
    assert passage.doc_id == "tides-cafe" and passage.title == "Tides cafe"
    assert passage.chunk_id.startswith("tides-cafe#") and "harbour" in passage.text


def test_odd_query_text_is_searched_literally(domains):
    for query in ['"Olympus Mons', "volcano AND (", "title:mars*", "Olympus Mons?!", "\\", "*"]:
        hits = gateway.search(query, domains=["astronomy"], k=2)
        assert len(hits) == 2
        if query not in ("\\", "*"):
            assert hits[0].doc_id == "mars"


@pytest.mark.parametrize(
    ("query", "domains_", "k", "error", "match"),
    [
        ("", None, 10, ValueError, "empty"),
        ("   ", None, 10, ValueError, "empty"),
        ("tides", None, 0, ValueError, "between 1 and 100"),
        ("tides", None, 101, ValueError, "between 1 and 100"),
        ("tides", [], 10, ValueError, "non-empty"),
        ("tides", ["astronomy", "gardening"], 10, gateway.UnknownDomainError, "gardening"),
        ("x" * 5000, None, 10, ValueError, "longer than"),
    ],
)
def test_bad_requests_raise_clear_errors(domains, query, domains_, k, error, match):
    with pytest.raises(error, match=match):
        gateway.search(query, domains=domains_, k=k)


def test_unknown_domain_is_a_value_error():
    assert issubclass(gateway.UnknownDomainError, ValueError)
