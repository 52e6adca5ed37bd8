"""Score fusion of the dense and full-text sides: reciprocal rank fusion and the convex combination."""

import pytest

from conveyor.retrieval import Candidate, convex, fuse, rrf


def ranking(domain: str, *scored: tuple[str, float]) -> list[Candidate]:
    return [
        Candidate(domain, doc_id, score, {"chunk_id": f"{doc_id}-0", "side": domain})
        for doc_id, score in scored
    ]


class TestRRF:
    def test_sums_reciprocal_ranks_over_the_lists(self):
        dense = ranking("d", ("a", 0.9), ("b", 0.8))
        text = ranking("d", ("b", 12.0), ("c", 3.0))
        scores = rrf([dense, text], k=60)
        assert scores[("d", "a")] == pytest.approx(1 / 61)
        assert scores[("d", "b")] == pytest.approx(1 / 62 + 1 / 61)
        assert scores[("d", "c")] == pytest.approx(1 / 62)

    def test_uses_ranks_not_raw_scores(self):
        """BM25 scores in the hundreds do not outweigh cosine scores below 1."""
        dense = ranking("d", ("a", 0.5), ("b", 0.4))
        text = ranking("d", ("b", 900.0), ("a", 899.0))
        scores = rrf([dense, text])
        assert scores[("d", "a")] == pytest.approx(scores[("d", "b")])

    def test_same_document_in_two_domains_stays_two_entries(self):
        scores = rrf([ranking("x", ("1", 1.0)), ranking("y", ("1", 1.0))])
        assert set(scores) == {("x", "1"), ("y", "1")}


class TestConvex:
    def test_min_max_normalises_each_side_then_weights(self):
        dense = ranking("d", ("a", 0.9), ("b", 0.5), ("c", 0.1))
        text = ranking("d", ("c", 30.0), ("a", 10.0))
        scores = convex([dense, text], [0.5, 0.5])
        assert scores[("d", "a")] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
        assert scores[("d", "b")] == pytest.approx(0.5 * 0.5)
        assert scores[("d", "c")] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)

    def test_a_document_seen_by_one_side_gets_zero_from_the_other(self):
        scores = convex([ranking("d", ("a", 2.0), ("b", 1.0)), []], [0.7, 0.3])
        assert scores == {("d", "a"): pytest.approx(0.7), ("d", "b"): pytest.approx(0.0)}

    def test_a_side_with_equal_scores_counts_fully(self):
        scores = convex([ranking("d", ("a", 0.4), ("b", 0.4))], [1.0])
        assert scores == {("d", "a"): 1.0, ("d", "b"): 1.0}


class TestFuse:
    @pytest.mark.parametrize("fusion", ["rrf", "convex"])
    def test_ranks_by_fused_score_with_ties_broken_by_key(self, fusion):
        dense = ranking("d", ("b", 0.9), ("a", 0.9))
        text = ranking("d", ("a", 5.0), ("b", 5.0))
        fused = fuse(dense, text, fusion)
        assert [c.doc_id for c in fused] == ["a", "b"]
        assert fused[0].score == pytest.approx(fused[1].score)

    def test_agreement_of_both_sides_wins(self):
        dense = ranking("d", ("a", 0.9), ("b", 0.7), ("c", 0.6))
        text = ranking("d", ("b", 20.0), ("c", 4.0), ("a", 1.0))
        assert [c.doc_id for c in fuse(dense, text, "rrf")][0] == "b"
        assert [c.doc_id for c in fuse(dense, text, "convex", dense_weight=0.5)][0] == "b"

    def test_the_dense_chunk_represents_a_document_both_sides_saw(self):
        dense = [Candidate("d", "a", 0.9, {"chunk_id": "a-dense"})]
        text = [
            Candidate("d", "a", 3.0, {"chunk_id": "a-text"}),
            Candidate("d", "z", 1.0, {"chunk_id": "z-0"}),
        ]
        by_doc = {c.doc_id: c.row["chunk_id"] for c in fuse(dense, text, "rrf")}
        assert by_doc == {"a": "a-dense", "z": "z-0"}

    def test_empty_sides_give_nothing(self):
        assert fuse([], [], "rrf") == [] and fuse([], [], "convex") == []
