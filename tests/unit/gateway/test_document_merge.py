"""How a PDF's pages become one answer: merged where that means something, failed pages
left out of the merge, and a document of failures an error."""

from __future__ import annotations

import pytest

from vlserve.analysis import TaskInput
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.document_analysis import _raise_if_none_read, merged
from vlserve.gateway.schemas import PageResult


def spec(task: str, **fields) -> TaskInput:
    return TaskInput(task=task, image_count=1, **fields)


def pages(*results) -> list[PageResult]:
    return [PageResult(page=n, result=r) for n, r in enumerate(results, 1) if r is not None]


def test_a_document_is_one_markdown_with_page_markers_without_the_failed_page():
    done = pages({"markdown": "# One"}, None, {"markdown": "Three"})  # page 2 failed
    assert merged(spec("document"), done, per_page=False) == {"markdown": "<!-- page 1 -->\n# One\n\n"
                                                                          "<!-- page 3 -->\nThree"}


def test_ocr_text_by_page_also_from_lines_with_boxes():
    done = pages({"text": "a\nb", "lines": ["a", "b"]}, {"lines": [{"text": "c", "box": [0, 0, 1, 1]}]})
    assert merged(spec("ocr"), done, per_page=False) == {"text": "<!-- page 1 -->\na\nb\n\n<!-- page 2 -->\nc"}


def test_extract_merges_fields_and_joins_lists_or_keeps_pages_apart():
    done = pages({"total": None, "items": [1]}, {"total": 12, "items": [2], "date": "2026-01-02"})
    assert merged(spec("extract"), done, per_page=False) == {"total": 12, "items": [1, 2], "date": "2026-01-02"}
    assert merged(spec("extract"), done, per_page=True) == [{"total": None, "items": [1]},
                                                            {"total": 12, "items": [2], "date": "2026-01-02"}]


def test_other_tasks_list_the_pages_results():
    assert merged(spec("caption"), pages({"caption": "a"}, {"caption": "b"}), per_page=False) == [
        {"caption": "a"}, {"caption": "b"}]


def test_some_pages_failing_is_an_answer_all_failing_is_the_first_error():
    refused = ServiceError(ErrorKind.RATE_LIMITED, "Limit reached", headers={"Retry-After": "3"})
    ok = (PageResult(page=1, result={}), "m", None)
    failed = (PageResult(page=2, error=refused.body()["error"]), None, refused)
    _raise_if_none_read([ok, failed])  # some pages read: the answer says which failed
    with pytest.raises(ServiceError) as caught:
        _raise_if_none_read([failed, failed])
    assert caught.value is refused and caught.value.headers["Retry-After"] == "3"
