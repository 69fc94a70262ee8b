"""``recfunnel report`` and per-run ``curves.png``: self-contained HTML with every section."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from recfunnel.cli import main
from recfunnel.plots import gini

SECTIONS = ("config", "metrics", "curves", "popularity", "users")
PNG = b"\x89PNG\r\n\x1a\n"


def _inlined_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def _no_external_reference(text: str) -> None:
    assert not re.search(r"https?://", text)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)  # only inline data or anchors


@pytest.fixture
def trained(train_csv, tmp_path):
    """A two-tower run with a validation split (so its history holds validation metrics)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    argv = ["train", "--train", str(train_csv), "--rating-col", "rating", "--epochs", "3",
            "--dim", "4", "--validation-fraction", "0.2", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_gradient_run_saves_its_curves(trained):
    png = (trained / "curves.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 5_000


def test_report_has_every_section_and_nothing_external(trained, capsys):
    capsys.readouterr()
    out = trained.parent / "report.html"
    assert main(["report", str(trained), "--out", str(out), "--users", "3"]) == 0
    assert "wrote" in capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 2_000_000
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    _no_external_reference(text)
    pngs = _inlined_pngs(text)
    assert len(pngs) == 2 and all(p.startswith(PNG) for p in pngs)  # curves + popularity
    assert "most popular" in text and "run / baseline" in text  # the baseline was refitted
    assert text.count('<div class="user">') == 3
    assert "Catalogue coverage".lower() in text.lower() and "Gini" in text
    curves = text.split('<section id="curves">')[1].split("</section>")[0]
    assert "3 epochs" in curves and "recall@10" in curves  # validation metrics per epoch


def test_report_without_the_data_or_charts(trained, tmp_path, monkeypatch):
    import recfunnel.plots

    (tmp_path / "train.csv").unlink()  # the run's data is gone: no baseline, a note instead
    monkeypatch.setattr(recfunnel.plots, "matplotlib_missing", lambda: "matplotlib is absent")
    out = tmp_path / "r.html"
    assert main(["report", str(trained), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Most-popular baseline not computed" in text
    assert "skipped: matplotlib is absent" in text
    assert not _inlined_pngs(text)
    for section in SECTIONS:
        assert f'<section id="{section}">' in text


def test_report_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_gini_known_values():
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    # one of four items takes everything: (2*4 - 4 - 1) * 1 / (4 * 1) = 3/4
    assert gini(np.array([0, 0, 0, 5])) == pytest.approx(0.75)
    assert gini(np.array([0, 0])) == 0.0


def test_report_on_movielens(ml100k, tmp_path):
    pytest.importorskip("matplotlib")
    run_dir = tmp_path / "wals"
    argv = ["train", "--data-dir", str(ml100k), "--model", "wals", "--out", str(run_dir)]
    assert main([*argv, "--json"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 2_000_000
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    _no_external_reference(text)
    assert "Star Wars (1977)" in text  # titles, not ids
    assert text.count('<div class="user">') == 5


def test_report_of_a_run_saved_from_python(tmp_path):
    from recfunnel.data import Vocabulary, checkerboard
    from recfunnel.models import MostPopular
    from recfunnel.report import build_report
    from recfunnel.runs import Run

    data = checkerboard(6, 8, seed=0)
    users = Vocabulary([f"u{i}" for i in range(6)], name="user")
    items = Vocabulary([f"i{i}" for i in range(8)], name="item")
    run_dir = Run(MostPopular().fit(data), users, items).save(tmp_path / "run")
    text = build_report(run_dir, users=2, k=3)  # no data spec: nothing loaded, no download
    assert "the run records no data spec" in text
    assert text.count('<div class="user">') == 2
    _no_external_reference(text)
