"""Agents on the real model, knowledge store and sandbox: research, data, code, summary, memory, chat."""

import re
from pathlib import Path

import pytest

from agents import chat, code, data, memory, research, summary
from agents.analysis import Analysis, unreadable
from agents.code import AGENT as CODE
from agents.code import shows_output
from agents.codegen import (
    TEST_RUNNER,
    complete_lines,
    explain_asserts,
    only_asserts_failed,
    quote_lines,
    run_script,
    suite_results,
)
from agents.llm import get_llm
from agents.sandbox import Chart, run_code
from conveyor.datasets import load

FACTS = [
    {
        "id": "lighthouse",
        "title": "Kelpie Point lighthouse",
        "text": "The Kelpie Point lighthouse was built in 1871. Its light has a range of 23 nautical miles "
        "and the "
        "tower is painted in red and white bands.",
    },
    {
        "id": "ferry",
        "title": "Harbour ferry timetable",
        "text": "The harbour ferry leaves pier 3 every 40 minutes between 6 am and 11 pm, all year round.",
    },
    {
        "id": "market",
        "title": "Fish market",
        "text": "The fish market on Quay Street opens at 5 am on weekdays and sells the morning catch.",
    },
]


@pytest.fixture(scope="module")
def facts_domain():
    from flows.index_documents import index_documents

    index_documents(domain="agents-facts", documents=FACTS)
    return "agents-facts"


@pytest.fixture()
def llm_down(configure):
    """The configured LLM is an OpenAI-compatible endpoint on a closed port."""
    configure(llm_backend="openai", llm_base_url="http://127.0.0.1:9/v1")


class TestResearch:
    def test_answer_cites_the_retrieved_sources(self, facts_domain):
        out = research.AGENT("When was the Kelpie Point lighthouse built?", domains=[facts_domain])
        assert out.ok and out.sources
        numbers = [int(n) for n in re.findall(r"\[(\d+)\]", out.answer)]
        assert numbers and out.data["citations"] == sorted(set(numbers))
        cited = {s["doc_id"] for s in out.sources if s["n"] in numbers}
        assert "lighthouse" in cited and all(1 <= n <= len(out.sources) for n in numbers)

    def test_says_it_does_not_know_when_nothing_is_relevant(self, facts_domain):
        out = research.AGENT(
            "Which tensor parallel strategy suits a 70B transformer?", domains=[facts_domain]
        )
        assert out.answer == research.NO_ANSWER and out.sources == []

    def test_llm_down_still_returns_sources(self, facts_domain, llm_down):
        out = research.AGENT("What is the ferry timetable?", domains=[facts_domain])
        assert not out.ok and "127.0.0.1:9" in out.error
        assert "ferry" in {s["doc_id"] for s in out.sources}

    def test_unknown_domain_is_reported(self, settings):
        out = research.AGENT("anything", domains=["no-such-domain"])
        assert not out.ok and "no-such-domain" in out.error


class TestData:
    def test_the_model_picks_the_measure_and_the_numbers_come_from_executed_code(self, settings):
        out = data.AGENT("What is the total revenue per region in sales_2024.csv?")
        assert out.ok, out.error
        assert out.data["spec_method"] == "llm", "the model must choose what to measure"
        assert out.data["spec"] | {"period": "month"} == {
            "measure": "revenue",
            "aggregation": "sum",
            "group_by": "region",
            "date": out.data["spec"]["date"],
            "period": "month",
        }
        expected = load("sales_2024").groupby("region")["revenue"].sum()
        table = out.data["result"]["tables"]["total revenue by region"]
        assert table == pytest.approx(expected.round(2).to_dict(), abs=0.01)
        assert f"**largest region by total revenue**: {expected.idxmax()}" in out.answer

    def test_the_analysis_ran_under_os_isolation(self, settings):
        out = data.AGENT("How many rows does sales_2024.csv have?")
        assert out.ok and out.data["isolation"] == "bubblewrap"
        assert Analysis.model_validate(out.data["result"]).value("rows") == len(load("sales_2024"))

    def test_without_the_model_the_default_analysis_says_so(self, settings, llm_down):
        out = data.AGENT("What is the total revenue per region in sales_2024.csv?")
        assert out.ok and out.data["spec_method"] == "default"
        assert "model unavailable, default choice" in out.answer

    def test_without_isolation_the_step_fails_and_names_the_setting(self, settings, monkeypatch, tmp_path):
        from agents import isolation

        monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
        isolation.check_available.cache_clear()
        try:
            out = data.AGENT("What is the total revenue per region in sales_2024.csv?")
        finally:
            monkeypatch.undo()
            isolation.check_available.cache_clear()
        assert not out.ok and "CONVEYOR_SANDBOX_ISOLATION" in out.error and "bwrap" in out.error

    def test_charts_are_readable_pngs(self, settings):
        out = data.AGENT("Plot the number of units sold per category in sales_2024.csv as a bar chart")
        assert out.ok and out.figures and out.data["charts"]
        assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in out.figures)
        for chart in map(Chart.model_validate, out.data["charts"]):
            assert unreadable(chart) is None, chart

    @pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/shadow"])
    def test_dataset_names_are_validated(self, settings, name):
        out = data.AGENT("Average of everything", dataset=name)
        assert not out.ok and "invalid dataset id" in out.error

    def test_unknown_dataset_is_a_clear_error(self, settings):
        out = data.AGENT("Average price in nonexistent_sales.csv")
        assert not out.ok and "no known dataset" in out.error


class TestCode:
    def test_earlier_modules_are_described_as_the_imports_and_calls_to_make(self):
        source = "def to_f(c):\n    return c * 9 / 5 + 32\n\n\nclass Scale:\n    def __init__(self, unit):\n"
        source += "        self.unit = unit\n\n    def classify(self, t):\n        return 'mild'\n"
        note = code.describe_modules({"temps": source, "broken": "def ("})
        assert "from temps import to_f  # to_f(c)" in note
        assert "from temps import Scale  # Scale(unit).classify(t)" in note and "broken" not in note

    def test_a_test_script_must_import_the_modules_and_define_tests(self):
        check = code.tests_modules({"temps": "def to_f(c):\n    return c * 9 / 5 + 32\n"})
        copied = "def to_f(c):\n    return c\n\n\ndef test_to_f():\n    assert to_f(0) == 32\n"
        assert "defines to_f itself" in (check(copied, None) or "")
        assert "no test_ function" in (check("from temps import to_f\nprint(to_f(0))\n", None) or "")
        assert check("from temps import to_f\n\n\ndef test_to_f():\n    assert to_f(0) == 32\n", None) is None

    def test_test_functions_in_generated_code_are_run_and_a_failing_one_is_named(self, settings):
        wrong = "def add(a, b):\n    return a - b\n\n\ndef test_add():\n    assert add(2, 2) == 4\n"
        failed = run_code(wrong + TEST_RUNNER)
        assert not failed.ok and failed.error
        assert "0 of 1 test functions passed; failed tests: test_add (line 6)" in failed.error
        assert "(line 6: assert add(2, 2) == 4)" in quote_lines(failed.failure(), wrong)
        assert complete_lines(wrong + "\n\ndef test_sub():\n    assert add(2, 2) == (") == wrong.rstrip()
        explained = run_code(explain_asserts(wrong) + TEST_RUNNER)  # the values compared, line numbers kept
        assert "test_add (line 6): AssertionError: 0 != 4" in explained.error
        passed = run_code(wrong.replace("a - b", "a + b") + TEST_RUNNER)
        assert passed.ok and "1 test functions passed" in passed.stdout

    def test_the_runner_reports_which_test_functions_passed_and_why_the_others_failed(self, settings):
        script = (
            "def test_sum():\n    assert sum([1, 2]) == 3\n\n\n"
            "def test_upper():\n    assert 'a'.upper() == 'a'\n"
        )
        run = run_script(script)
        results = suite_results(run.stdout)
        assert not run.ok and results and results.passed == ["test_sum"]
        assert [(f.name, f.line, f.error) for f in results.failed] == [
            ("test_upper", 6, "AssertionError: 'A' != 'a'")
        ]
        assert only_asserts_failed(run)
        broken = run_script(script.replace("'a'.upper()", "'a'.upper(1)"))  # the test itself is wrong
        assert suite_results(broken.stdout) and not only_asserts_failed(broken)
        assert suite_results(run_script("print(1)").stdout) is None  # no test functions, no report

    def test_the_functions_failing_asserts_call_are_found_with_every_assert_on_them(self):
        modules = {"temps": "def to_f(c):\n    return c\n", "labels": "def classify(t):\n    return 'mild'\n"}
        script = (
            "import labels\nfrom temps import to_f\n\n\n"
            "def test_to_f():\n    assert to_f(100) == 212\n    assert to_f(0) == 0\n\n\n"
            "def test_classify():\n    assert labels.classify(-5) == 'freezing'\n"
        )
        failed = suite_results(
            run_script(script, files=code.module_files(modules, self.folder)).stdout
        ).failed
        assert code.failing_functions(script, failed, modules) == [("temps", "to_f"), ("labels", "classify")]
        assert code.asserts_on(script, "to_f") == ["assert to_f(100) == 212", "assert to_f(0) == 0"]

    def test_a_rewritten_function_replaces_only_that_function(self):
        source = "import math\n\n\ndef to_f(c):\n    return c\n\n\ndef area(r):\n    return math.pi * r**2\n"
        reply = "from decimal import Decimal\n\n\ndef to_f(c):\n    return c * 9 / 5 + 32\n"
        replaced = code.replace_function(source, "to_f", reply)
        assert replaced.startswith("from decimal import Decimal\nimport math\n")
        assert "return c * 9 / 5 + 32" in replaced and "return c\n" not in replaced
        assert "def area(r):\n    return math.pi * r**2" in replaced
        assert code.replace_function(source, "to_f", "def other(c):\n    return c\n") is None

    def test_a_function_a_failing_test_shows_wrong_is_written_again_and_kept_only_when_more_tests_pass(
        self, configure
    ):
        configure(llm_quality_roles='["code"]')  # the default model of the code role
        modules = {
            "temps": "def to_f(c):\n    return c * 9 / 5\n\n\ndef to_c(f):\n    return (f - 32) * 5 / 9\n",
            "labels": "def classify(c):\n    return 'freezing' if c < 0 else 'mild'\n",
        }
        script = (
            "from labels import classify\nfrom temps import to_c, to_f\n\n\n"
            "def test_to_f():\n    assert to_f(100) == 212\n\n\n"
            "def test_to_c():\n    assert to_c(212) == 100\n\n\n"
            "def test_classify():  # no function meets both\n"
            "    assert classify(0) == 'freezing'\n    assert classify(0) == 'mild'\n"
        )
        results = suite_results(run_script(script, files=code.module_files(modules, self.folder)).stdout)
        assert results.passed == ["test_to_c"]
        assert [f.name for f in results.failed] == ["test_to_f", "test_classify"]
        task = "A library to convert temperatures between Celsius and Fahrenheit and classify them"
        fixed = code.fix_modules(script, modules, results, task, {}, self.folder)
        assert fixed.results.passed == ["test_to_f", "test_to_c"], fixed.notes
        assert fixed.notes == [
            f"`temps.to_f` written again from its asserts: {fixed.results.summary()}",
            "`labels.classify` kept: no new version passed more tests",
        ]
        assert "def to_c(f):\n    return (f - 32) * 5 / 9" in fixed.modules["temps"]  # the passing one kept
        assert fixed.modules["labels"] == modules["labels"] and fixed.run and not fixed.run.ok

    @pytest.fixture(autouse=True)
    def _module_folder(self, tmp_path):
        self.folder = tmp_path

    def test_a_chart_of_raw_rows_is_sent_back_to_be_aggregated(self, settings):
        plot_raw = (
            "import pandas as pd, matplotlib.pyplot as plt\n"
            "df = pd.read_csv('sales_2024.csv')\n"
            "df.plot(x='date', y='revenue')\nplt.savefig('chart.png')\nplt.close()\n"
        )
        run = run_code(plot_raw, files=data.dataset_files("sales_2024"))
        assert run.ok and run.charts[0].line_points == len(load("sales_2024"))
        assert "aggregate first" in shows_output(plot_raw, run)

    def test_code_is_parsed_run_and_reported(self, settings):
        out = CODE("Write a function is_palindrome(s) and print is_palindrome('level')")
        code = out.data["code"]
        compile(code, "<generated>", "exec")
        assert out.data["parses"] and out.data["executed"] and 1 <= out.data["attempts"] <= 3
        assert out.data["isolation"] == "bubblewrap"
        assert out.ok, out.data["errors"]
        assert out.data["run_ok"] and "True" in out.data["stdout"]


class TestSummary:
    def test_summary_respects_the_word_bound(self, settings):
        text = " ".join(
            f"Sentence {i} says revenue grew by {i} percent in region {i % 4}." for i in range(40)
        )
        out = summary.AGENT(text, max_words=25)
        assert out.ok and 0 < len(out.answer.split()) <= 25

    def test_a_number_the_text_does_not_hold_is_reported(self):
        text = "Total revenue: 15,708,803.88. West has a share of 36.43 %. Four outlier days."
        assert summary.unsupported_numbers("Revenue was 15.7 million; West held 36.4%.", text) == []
        assert summary.unsupported_numbers("West held 41.2% of 15,708,803.88.", text) == ["41.2"]

    def test_bound_words_cuts_at_a_sentence(self):
        assert summary.bound_words("One two three. Four five six seven.", 5) == "One two three."
        assert summary.bound_words("### Findings\n- West leads\n- North last\n- East", 8) == (
            "### Findings\n- West leads\n- North last"
        )

    def test_a_summary_cut_by_the_token_limit_ends_at_its_last_full_line(self):
        cut = "- **Total Revenue**: $15,708,803.88\n- West leads at $5,722,734.37, then North with $2,155,"
        assert summary.drop_unfinished(cut) == "- **Total Revenue**: $15,708,803.88"
        assert summary.drop_unfinished("West leads. North follows with 2,1") == "West leads."
        assert summary.NUMBER.findall("North with $2,155, then 7") == ["2,155", "7"]

    def test_a_cut_leaves_no_empty_heading_or_list_marker_at_the_end(self):
        assert summary.EMPTY_ENDING.sub("", "2 of 3 tests pass.\n\n### Key Findings\n\n1.") == (
            "2 of 3 tests pass."
        )
        assert summary.EMPTY_ENDING.sub("", "### Findings\n- West leads\n1. North") == (
            "### Findings\n- West leads\n1. North"
        )


class TestMemory:
    def test_record_recall_feedback_and_report(self, settings):
        run_id = memory.record("agent", "code", "parse a JSON config file", True, 1.5, output="import json")
        memory.record("agent", "code", "parse a YAML config file", False, 3.0, error="ImportError: yaml")
        recalled = memory.similar("read a JSON configuration", "code")
        assert recalled and recalled[0]["id"] == run_id  # only successful runs are examples
        memory.add_feedback(run_id, -1)
        assert all(r["id"] != run_id for r in memory.similar("read a JSON configuration", "code"))
        row = next(r for r in memory.performance_report() if r["agent"] == "code")
        assert (
            row["runs"] >= 2 and 0 < row["success_rate"] < 1 and row["p95_latency_s"] >= row["p50_latency_s"]
        )
        assert any("ImportError" in e["error"] for e in row["common_errors"])

    @pytest.mark.parametrize(("run_id", "score"), [("x' OR '1'='1", 1), ("0" * 32, 5)])
    def test_bad_feedback_is_refused(self, settings, run_id, score):
        with pytest.raises(ValueError):
            memory.add_feedback(run_id, score)


class ListenerGone(Exception):
    pass


class TestChat:
    def test_reply_routes_and_records(self, facts_domain):
        get_llm()
        reply = chat.reply(
            "Summarize this: the ferry leaves every 40 minutes and the market opens at 5 am.", []
        )
        assert reply.agent in {"summary", "research"} and reply.answer and reply.run_id

    def test_stream_sends_tokens_then_one_final_event(self, facts_domain):
        events: list[chat.ChatEvent] = []
        chat.stream_reply("Summarize in one line: the lighthouse was built in 1871.", [], events.append)
        assert [e.type for e in events][-1] == "final" and events[0].type == "token"
        assert sum(e.type == "final" for e in events) == 1
        final = events[-1].data
        assert set(final) >= {"agent", "sources", "answer"}
        assert "".join(e.data for e in events if e.type == "token").strip()

    def test_closing_the_stream_stops_the_generation(self, facts_domain):
        message = "Summarize in three sentences: the ferry to the island was rebuilt twice, in 1921 and 1987."
        events: list[chat.ChatEvent] = []

        def listener_gone_after_the_first_token(event: chat.ChatEvent) -> None:
            if events:
                raise ListenerGone  # what the API's emit raises when the client disconnects
            events.append(event)

        with pytest.raises(ListenerGone):
            chat.stream_reply(message, [], listener_gone_after_the_first_token)
        assert [e.type for e in events] == ["token"]
        # The agent never finished: its run was not recorded, and the model is free for the next caller.
        assert memory._table().count_rows(f"task = '{message}'") == 0
        assert chat.reply(message, []).run_id
        assert memory._table().count_rows(f"task = '{message}'") == 1
