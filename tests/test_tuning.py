"""recfunnel tune and --model auto: budgets, metrics, the study on disk, presets, the CLI."""

import csv
import json

import numpy as np
import pytest

from recfunnel.cli import main
from recfunnel.config import EASEConfig, TwoStageConfig
from recfunnel.data import Interactions
from recfunnel.data.synthetic import power_law
from recfunnel.errors import RecfunnelError
from recfunnel.models import BPR
from recfunnel.presets import config_toml, preset, read_config
from recfunnel.training import epoch_hook
from recfunnel.tuning import Metric, auto, carve_validation, parse_budget, tune

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def small():
    data = power_law(120, 60, 1800, seed=3)
    return carve_validation(data, 0.2, seed=0)


@pytest.mark.parametrize(
    "text, seconds",
    [("600", 600), ("10m", 600), ("1h", 3600), ("1.5h", 5400), ("90s", 90), (" 2m ", 120)],
)
def test_budget_parses(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "5x", "m", "1d", "ten"])
def test_bad_budget_is_refused(text):
    with pytest.raises(RecfunnelError, match="--budget must be a positive duration"):
        parse_budget(text)


def test_metrics_parse_and_refuse():
    assert Metric.parse("NDCG@10").key == "ndcg@10"
    assert Metric.parse("rmse").minimize
    for bad in ("ndcg", "ndcg@0", "auc@10", "recall@x"):
        with pytest.raises(RecfunnelError, match="unknown --metric"):
            Metric.parse(bad)


def test_validation_is_carved_from_training_rows_only(small):
    fit, validation = small
    data = power_law(120, 60, 1800, seed=3)
    pairs = set(zip(data.users.tolist(), data.items.tolist(), strict=True))
    fit_pairs = set(zip(fit.users.tolist(), fit.items.tolist(), strict=True))
    val_pairs = set(zip(validation.users.tolist(), validation.items.tolist(), strict=True))
    assert fit_pairs | val_pairs == pairs and not fit_pairs & val_pairs


def test_epoch_hook_sees_every_epoch_and_can_stop_the_fit(small):
    fit, validation = small
    seen = []
    with epoch_hook(seen.append):
        BPR(dim=4, epochs=3, batch_size=256).fit(fit, validation=validation)
    assert [r["epoch"] for r in seen] == [1, 2, 3] and "ndcg@10" in seen[0]

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), epoch_hook(stop):
        BPR(dim=4, epochs=5, batch_size=256).fit(fit, validation=validation)
    BPR(dim=4, epochs=1, batch_size=256).fit(fit, validation=validation)  # hook gone: no raise


def test_tune_writes_a_preset_that_trains_and_the_study_resumes(small, tmp_path):
    fit, validation = small
    out = tmp_path / "tune"
    result = tune("ease", fit, validation, out=out, trials=4, metric="ndcg@10", seed=0)
    assert result.best_params["regularization"] == pytest.approx(
        max(result.trials, key=lambda t: t["value"])["param:regularization"]
    )
    assert result.trials[0]["param:regularization"] == 300.0  # the preset is the first trial
    for name in ("best.toml", "trials.csv", "study.db", "history.png"):
        assert (out / name).is_file(), name
    assert 'model = "ease"' in (out / "best.toml").read_text()
    assert preset("ease", str(out / "best.toml")) == EASEConfig.from_dict(result.best_params)
    with pytest.raises(RecfunnelError, match="configures --model ease"):
        preset("wals", str(out / "best.toml"))
    again = tune("ease", fit, validation, out=out, trials=6, seed=0)  # resumes: 2 more
    assert len(again.trials) == 6
    assert again.best_value >= result.best_value
    with (out / "trials.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_tune_prunes_on_the_per_epoch_metric(small):
    fit, validation = small
    result = tune("bpr", fit, validation, trials=8, base=dict(batch_size=256),
                  fixed={"epochs": 4, "dim": 4}, seed=1)  # fmt: skip
    states = {t["state"] for t in result.trials}
    assert "complete" in states
    assert all(t["epochs_reported"] >= 1 for t in result.trials)


def test_preset_file_round_trip(tmp_path):
    params = {"candidates": 100, "blend": 0.5, "retrieval": {"dim": 8, "history": True},
              "ranker": {"hidden": [8, 4], "objective": "listwise"}}  # fmt: skip
    config = TwoStageConfig.from_dict(params)
    assert config.retrieval.pool_seen_items and config.ranker.hidden == (8, 4)
    path = tmp_path / "p.toml"
    path.write_text(config_toml(config, model="two-stage", comment="a comment"), encoding="utf-8")
    assert path.read_text().startswith("# a comment\n")
    assert read_config(path, "two-stage") == config
    with pytest.raises(RecfunnelError, match="does not exist"):
        read_config(tmp_path / "missing.toml", "two-stage")


def test_auto_ranks_the_portfolio_and_picks_the_best(small):
    fit, validation = small
    kind, params, board = auto(
        fit, validation, budget=6, metric="recall@10",
        candidates=["most-popular", "ease", "bpr"], fixed={"epochs": 2},
    )  # fmt: skip
    values = [row["value"] for row in board if row["value"] is not None]
    assert values == sorted(values, reverse=True)
    assert board[0]["model"] == kind and board[0]["rank"] == 1
    assert {row["model"] for row in board} == {"most-popular", "ease", "bpr"}


def _train_file(tmp_path):
    data = power_law(80, 40, 1200, seed=5)
    path = tmp_path / "train.csv"
    rows = "\n".join(f"u{u},i{i}" for u, i in zip(data.users, data.items, strict=True))
    path.write_text("user,item\n" + rows + "\n", encoding="utf-8")
    return path


def test_cli_tune_and_train_the_best(tmp_path, capsys):
    train = _train_file(tmp_path)
    out = tmp_path / "tuned"
    code = main(["tune", "--train", str(train), "--model", "ease", "--trials", "3",
                 "--out", str(out), "--json"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 3 and summary["model"] == "ease"
    code = main(["train", "--train", str(train), "--model", "ease", "--preset",
                 str(out / "best.toml"), "--json"])  # fmt: skip
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["config"]["regularization"] == summary["best_params"]["regularization"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "ease", "--budget", "soon"], "--budget must be"),
        (["--model", "ease"], "give --budget"),
        (["--model", "ease", "--trials", "2", "--metric", "auc"], "unknown --metric"),
        (["--model", "ease", "--trials", "0"], "--trials must be at least 1"),
    ],
)
def test_cli_tune_bad_input_is_one_line(tmp_path, capsys, extra, message):
    train = _train_file(tmp_path)
    code = main(["tune", "--train", str(train), "--out", str(tmp_path / "t"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_cli_tune_refuses_a_file_as_out_before_reading_the_data(tmp_path, capsys):
    out = tmp_path / "taken.txt"
    out.write_text("a user's file")
    missing = tmp_path / "no-such-data.csv"  # never read: --out is refused first
    code = main(["tune", "--train", str(missing), "--model", "ease", "--trials", "2",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a file; choose a folder" in err
    assert out.read_text() == "a user's file"


def test_cli_auto_saves_the_leaderboard(tmp_path, capsys):
    train = _train_file(tmp_path)
    out = tmp_path / "auto"
    code = main(["train", "--train", str(train), "--model", "auto", "--budget", "8",
                 "--set", "epochs=2", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen:" in printed and "rank" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    board = metrics["leaderboard"]
    assert board[0]["rank"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["auto"]["chosen"] == board[0]["model"]


def test_tune_needs_a_budget_or_trials():
    data = Interactions(np.array([0, 1]), np.array([0, 1]), 2, 2)
    with pytest.raises(RecfunnelError):
        tune("ease", data, data)


def test_blend_is_the_weighted_sum_of_standardised_scores(small):
    from recfunnel.models import EASE, WALS, Blend
    from recfunnel.models.blend import standardise

    fit, _ = small
    ease = EASE(regularization=5.0).fit(fit)
    wals = WALS(dim=4, epochs=2).fit(fit)
    blend = Blend(members=[{"model": "ease", "params": {"regularization": 5.0}},
                           {"model": "wals", "params": {"dim": 4, "epochs": 2}}],
                  weights=[0.7, 0.3]).fit(fit)  # fmt: skip
    users = np.arange(10)
    expected = 0.7 * standardise(ease.score(users)) + 0.3 * standardise(wals.score(users))
    np.testing.assert_allclose(blend.score(users).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    z = standardise(ease.score(users))
    np.testing.assert_allclose(z.mean(1).numpy(), 0, atol=1e-5)
    with pytest.raises(RecfunnelError, match="2 members but 1 weights"):
        Blend(members=[{"model": "ease"}, {"model": "wals"}], weights=[1.0]).fit(fit)
    with pytest.raises(RecfunnelError, match="unknown model"):
        Blend(members=[{"model": "nope"}]).fit(fit)


def test_the_first_trial_is_the_preset_with_constructor_defaults(small):
    # the wals preset leaves reg_exponent out: the first trial must use the constructor's 0.0,
    # not a sampled value
    fit, validation = small
    result = tune("wals", fit, validation, trials=1, fixed={"epochs": 2})
    assert result.trials[0]["param:reg_exponent"] == 0.0
    assert result.trials[0]["param:dim"] == 32


# ------------------------------------------------------------------- the budget is a limit
def test_deadline_stops_a_fit_at_an_epoch_boundary(small):
    import time

    from recfunnel.training import deadline

    fit, validation = small

    def slow(record):  # every epoch takes at least 0.2 s
        time.sleep(0.2)

    with epoch_hook(slow), deadline(time.perf_counter() + 0.5):
        model = BPR(dim=4, epochs=50, batch_size=256).fit(fit, validation=validation)
    log = model.training_log_
    assert log.out_of_time and 1 <= len(log.epochs) <= 3
    with deadline(time.perf_counter() - 1.0):  # already past: the first epoch still runs
        model = BPR(dim=4, epochs=50, batch_size=256).fit(fit)
    assert len(model.training_log_.epochs) == 1 and model.training_log_.out_of_time
    model = BPR(dim=4, epochs=3, batch_size=256).fit(fit)  # no deadline: every epoch
    assert len(model.training_log_.epochs) == 3 and not model.training_log_.out_of_time


def test_nested_deadlines_keep_the_earlier():
    import time

    from recfunnel.training import deadline, time_left

    assert time_left() is None
    now = time.perf_counter()
    with deadline(now + 100):
        with deadline(now + 1000):
            assert time_left() < 101
        with deadline(None):
            assert 0 < time_left() < 101
        with deadline(now + 10):
            assert time_left() < 11
    assert time_left() is None


def test_a_trial_cut_by_the_budget_keeps_the_epochs_it_trained(small):
    import time

    fit, validation = small

    def slow(record):
        time.sleep(0.3)

    BPR(dim=4, epochs=1, batch_size=256).fit(fit)  # the first optimiser imports torch._dynamo
    started = time.perf_counter()
    with epoch_hook(slow):
        result = tune("bpr", fit, validation, budget=1.0, metric="ndcg@10",
                      base={"dim": 4, "batch_size": 256, "epochs": 40})  # fmt: skip
    took = time.perf_counter() - started
    assert took < 1.0 + 3.0  # 40 epochs take > 12 s: cut after about one epoch past 1 s
    assert result.trials[0]["state"] == "complete"
    assert 1 <= result.best_params["trainer"]["epochs"] < 40  # the epochs it had time for


def test_estimates_are_positive_and_grow_with_epochs(small):
    from recfunnel.tuning import estimate_fit_seconds

    fit, validation = small
    base = preset("bpr", "default").override(dim=4)
    short = estimate_fit_seconds("bpr", base.override(epochs=1), fit, validation)
    long = estimate_fit_seconds("bpr", base.override(epochs=100), fit, validation)
    assert 0 < short < long
    assert estimate_fit_seconds("ease", EASEConfig(), fit) > 0
    assert estimate_fit_seconds("most-popular", preset("most-popular", "default"), fit) == 0


def test_auto_skips_what_cannot_fit_and_finishes_near_its_budget(small):
    import time

    fit, validation = small
    started = time.perf_counter()
    kind, _, board = auto(
        fit, validation, budget=4, metric="ndcg@10",
        candidates=["most-popular", "ease", "bpr"], fixed={"epochs": 100000},
    )  # fmt: skip
    assert time.perf_counter() - started < 4 + 2
    bpr = next(row for row in board if row["model"] == "bpr")
    assert bpr["value"] is None and bpr["note"].startswith("skipped: one fit takes about")
    assert kind in ("ease", "most-popular")


def test_auto_blends_up_to_four_models_with_weights_from_validation(small):
    fit, validation = small
    kind, params, board = auto(
        fit, validation, budget=20, metric="ndcg@10",
        candidates=["ease", "rp3beta", "wals"], fixed={"epochs": 3},
    )  # fmt: skip
    values = [row["value"] for row in board if row["value"] is not None]
    assert values == sorted(values, reverse=True)
    if kind == "blend":  # only when it beats every member on validation
        assert 2 <= len(params["members"]) <= 3
        assert sum(params["weights"]) == pytest.approx(1.0, abs=1e-3)
        assert board[0]["value"] > board[1]["value"]
