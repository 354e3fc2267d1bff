"""Log lines carry job, trial and worker ids, as text or JSON."""

from __future__ import annotations

import json
import logging

import pytest

from service.logs import configure_logging, log_context


@pytest.fixture(autouse=True)
def _restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, "json")
    with log_context(job="j1", worker="w1"):
        logging.getLogger("search.objective").info("trial %d done", 3, extra={"trial": 3})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "trial 3 done"
    assert (line["job"], line["worker"], line["trial"]) == ("j1", "w1", 3)
    assert line["level"] == "info" and line["logger"] == "search.objective"


def test_text_lines_append_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, "text")
    with log_context(job="j2"):
        logging.getLogger("x").warning("careful")
    logging.getLogger("x").warning("outside")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2] == "WARNING x: careful job=j2"
    assert lines[-1] == "WARNING x: outside"
