"""The service's answer encoding: the same bytes as encoding the records, without a Python
object per item."""

from __future__ import annotations

import gc
import math

import pytest

orjson = pytest.importorskip("orjson", reason="the serve extra (orjson) is not installed")

from recfunnel.runs import Recommendations  # noqa: E402
from recfunnel.serving.app import _answer  # noqa: E402
from recfunnel.serving.model import ItemsJSON  # noqa: E402

ODD = ["plain", 'quo"te', "back\\slash", "ends\\", '","', "tab\tnew\nline", "héllo", "雪", "😀", ""]


def reference(rec: Recommendations) -> bytes:
    return orjson.dumps({"user": rec.user, "cold_start": rec.cold_start,
                         "items": rec.to_records()})  # fmt: skip


@pytest.mark.parametrize("scores", [[], [0.5], [1e-7, -3.25, 12345.678, 0.1 + 0.2],
                                    [math.inf, -math.inf, math.nan, 2.0]])  # fmt: skip
def test_answers_are_the_bytes_the_records_encode_to(scores):
    items = ODD[: len(scores)]
    titles = [f"title {i}" for i in items]
    rec = Recommendations(user='u"1', items=items, scores=scores, titles=titles,
                          cold_start=bool(scores))  # fmt: skip
    encode = ItemsJSON()
    assert _answer(rec, encode) == reference(rec)
    assert _answer(rec, encode) == reference(rec)  # again, from the kept prefixes


def test_every_odd_id_round_trips():
    rec = Recommendations(user="u", items=ODD, scores=[float(i) for i in range(len(ODD))],
                          titles=list(reversed(ODD)))  # fmt: skip
    assert orjson.loads(_answer(rec, ItemsJSON())) == orjson.loads(reference(rec))


def test_an_answer_allocates_no_object_per_item():
    """1000 items: the garbage collector's allocation count grows by a handful of objects, not
    by one dict per item (256 users x 1000 items of dicts set off its full passes)."""
    n = 1000
    items = [f"i{i}" for i in range(n)]
    rec = Recommendations(user="u", items=items, scores=[i / n for i in range(n)], titles=items)
    encode = ItemsJSON()
    encode(rec)  # the prefixes are made once per served run

    def allocated(make) -> int:
        gc.collect()
        gc.disable()
        try:
            before = sum(gc.get_count())
            kept = [make() for _ in range(3)]  # noqa: F841 (alive while counting)
            return sum(gc.get_count()) - before
        finally:
            gc.enable()

    assert allocated(lambda: encode(rec)) < 50
    assert allocated(rec.to_records) >= 3 * n  # the plain records: one dict per item, at least
