"""The gateway over real LanceDB tables: parallel domains, fused ranking, passages, clear errors; domains that
are corrupted, missing or hung at query time are reported while the others answer, under concurrent load."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conveyor import gateway, knowledge
from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD, get_settings
from flows.index_documents import index_documents
from serving.testing import ProcessServer, login

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


def test_unknown_domain_is_a_value_error_naming_the_known_domains(domains):
    with pytest.raises(ValueError) as caught:  # what callers that only know ValueError catch
        gateway.search("tides", domains=["gardening"])
    assert type(caught.value) is gateway.UnknownDomainError
    assert "gardening" in str(caught.value) and "astronomy, " in str(caught.value)


def hammer(search: Callable, domains: list[str], callers: int, each: int, wait_s: float) -> list:
    """`callers` threads each running `each` searches at once; the searches answered within `wait_s`."""
    queries = ["ocean tides caused by the moon", "what makes bread rise"]

    def caller(n: int) -> list:
        return [search(queries[(n + i) % 2], domains=domains, k=3) for i in range(each)]

    threads = ThreadPoolExecutor(callers)
    jobs = [threads.submit(caller, n) for n in range(callers)]
    wait(jobs, timeout=wait_s)
    threads.shutdown(wait=False, cancel_futures=True)  # a hung caller must fail the test, not hang it
    return [answer for job in jobs if job.done() for answer in job.result()]


def test_concurrent_callers_all_get_answers(domains):
    """The issue's load: 32 threads x 4 searches over two domains (the nested fan-out answered 17 of 128)."""
    answers = hammer(gateway.retrieve, domains, callers=32, each=4, wait_s=300)
    assert len(answers) == 128
    assert all(not answer.failed_domains for answer in answers)
    tops = {answer.passages[0].doc_id for answer in answers}
    assert tops == {"moon", "bread"}


def table_dir(domain: str) -> Path:
    return Path(get_settings().knowledge_uri) / f"{knowledge.table_name(domain)}.lance"


@contextmanager
def damaged(domain: str, damage: Callable[[Path], None]) -> Iterator[str]:
    """A freshly indexed domain whose table folder `damage` breaks on disk; the folder is removed after."""
    index_documents(domain=domain, documents=COOKING)
    damage(table_dir(domain))
    try:
        yield domain
    finally:
        shutil.rmtree(table_dir(domain), ignore_errors=True)


def delete_data_files(table: Path) -> None:
    for data_file in (table / "data").iterdir():
        data_file.unlink()


def delete_manifests(table: Path) -> None:
    shutil.rmtree(table / "_versions")


@pytest.mark.parametrize(
    ("damage", "error"),
    [(delete_data_files, "Not found"), (delete_manifests, "was not found")],
    ids=["corrupted", "missing-table"],
)
def test_a_broken_domain_is_named_and_the_others_answer(domains, damage, error):
    with damaged("broken", damage) as broken:
        assert broken in gateway.list_domains()  # still listed: it fails at query time
        found = gateway.retrieve("ocean tides caused by the moon", domains=["astronomy", broken], k=5)
        assert [f.domain for f in found.failed_domains] == [broken]
        assert error in found.failed_domains[0].error
        assert found.passages[0].doc_id == "moon" and {p.domain for p in found.passages} == {"astronomy"}

        everything = gateway.retrieve("what makes bread rise", k=10)  # every domain, the broken one too
        assert broken in [f.domain for f in everything.failed_domains]
        ours = [p for p in everything.passages if p.domain in domains]
        assert ours[0].doc_id == "bread" and broken not in {p.domain for p in everything.passages}

        with pytest.raises(gateway.DomainsUnavailableError, match=f"{broken}: .*{error}"):
            gateway.search("tides", domains=[broken])


@pytest.fixture
def short_domain_timeout(configure):
    configure(gateway_domain_timeout_s=2)
    return 2


def stall_data_files(table: Path) -> None:
    """Each data file becomes a FIFO: a read blocks like storage that stopped answering."""
    for data_file in (table / "data").iterdir():
        data_file.unlink()
        os.mkfifo(data_file)


def release_stalled_reads(table: Path) -> None:
    """Open each FIFO for writing until no reader holds it: the blocked reads see end-of-file and fail."""
    for fifo in (table / "data").iterdir():
        for _ in range(100):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader left
                break
            time.sleep(0.1)


def test_a_hung_domain_times_out_and_the_others_answer(domains, short_domain_timeout):
    with damaged("stalled", stall_data_files) as stalled:
        caller = ThreadPoolExecutor(1)
        try:
            job = caller.submit(gateway.retrieve, "what makes bread rise", ["cooking", stalled], 3)
            found = job.result(timeout=60)  # without a per-domain deadline this waits forever
        finally:
            release_stalled_reads(table_dir(stalled))
            caller.shutdown()
        assert [f.model_dump() for f in found.failed_domains] == [
            {"domain": stalled, "error": f"no answer within {short_domain_timeout} s"}
        ]
        assert found.passages[0].doc_id == "bread" and {p.domain for p in found.passages} == {"cooking"}


def test_rag_query_over_http_reports_failed_domains_under_load(domains, tmp_path):
    """A real API process, 16 concurrent clients, one corrupted domain among the requested ones."""
    env = {"CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}"}
    with damaged("broken-http", delete_data_files) as broken, ProcessServer(env, tmp_path / "api.log") as api:
        headers = login(api.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)

        def post(body: dict) -> httpx.Response:
            return httpx.post(f"{api.url}/rag/query", headers=headers, json=body, timeout=120)

        def search(query: str, domains: list[str], k: int) -> dict:
            response = post({"query": query, "domains": domains, "k": k})
            assert response.status_code == 200, response.text
            return response.json()

        answers = hammer(search, [*domains, broken], callers=16, each=4, wait_s=300)
        assert len(answers) == 64
        for answer in answers:
            assert [f["domain"] for f in answer["failed_domains"]] == [broken]
            assert "Not found" in answer["failed_domains"][0]["error"]
            assert answer["passages"] and {p["domain"] for p in answer["passages"]} <= set(domains)

        everything_failed = post({"query": "tides", "domains": [broken]})
        assert everything_failed.status_code == 503 and broken in everything_failed.json()["detail"]
