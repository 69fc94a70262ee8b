"""The command line's config surface: help, presets, --set, --threads, history input."""

import json
import os

import pytest

from recfunnel.cli import main


def base(train_csv, out=None):
    argv = ["train", "--train", str(train_csv), "--rating-col", "rating", "--time-col", "ts"]
    return argv + (["--out", str(out)] if out else [])


def test_version_and_help_read_as_user_text(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("recfunnel ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "recfunnel train" in out


def test_train_help_lists_the_chosen_models_options_with_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "wals", "--help"])
    out = capsys.readouterr().out
    assert "options of --model wals" in out
    assert "regularization=30.0" in out and "alpha=4.0" in out  # the default preset's values
    assert "softmax=" not in out and "trainer.learning_rate" not in out
    assert "(default: 0.2)" in out  # --test-fraction shows its default
    with pytest.raises(SystemExit):
        main(["train", "--model", "two-stage", "--preset", "seed", "--help"])
    out = capsys.readouterr().out
    assert "retrieval.trainer.epochs=3" in out and "ranker.objective=listwise" in out


def test_presets_lists_values(capsys):
    assert main(["presets", "wals"]) == 0
    out = capsys.readouterr().out
    assert "wals --preset default" in out and "regularization = 30.0" in out
    assert "two-tower" not in out


def test_a_saved_run_retrains_from_its_config(train_csv, tmp_path, capsys):
    first = tmp_path / "first"
    argv = [*base(train_csv, first), "--model", "two-tower", "--epochs", "2", "--dim", "4",
            "--set", "temperature=0.5", "--set", "batch_size=32", "--json"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["temperature"] == 0.5 and config["trainer"]["batch_size"] == 32
    again = [*base(train_csv), "--model", "two-tower", "--preset", str(first), "--json"]
    assert main(again) == 0
    assert json.loads(capsys.readouterr().out)["config"] == config
    toml = tmp_path / "p.toml"
    assert main(["presets", "two-tower", "--toml"]) == 0
    toml.write_text(capsys.readouterr().out.split("# --model two-tower --preset default\n")[1])
    assert main([*base(train_csv), "--preset", str(toml), "--epochs", "1", "--dim", "4",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["config"]["user_l2"] == 0.01


def test_common_flags_reach_both_stages_of_a_composite(train_csv, capsys):
    small = ["--set", "retrieval.batch_size=32", "--set", "ranker.batch_size=32",
             "--set", "candidates=6", "--set", "ranker.features=false"]  # fmt: skip
    argv = [*base(train_csv), "--model", "two-stage", "--preset", "seed", "--epochs", "1",
            "--dim", "4", "--learning-rate", "0.05", *small, "--json"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    for stage in ("retrieval", "ranker"):
        assert config[stage]["dim"] == 4 and config[stage]["trainer"]["epochs"] == 1
        assert config[stage]["trainer"]["learning_rate"] == 0.05


def test_multitask_honours_patience(train_csv, capsys):
    argv = [*base(train_csv), "--model", "multitask", "--dim", "4", "--epochs", "6",
            "--batch-size", "32", "--set", "hidden=8", "--patience", "1",
            "--validation-fraction", "0.2", "--json"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["config"]["trainer"]["patience"] == 1


def test_train_prints_a_headline_before_the_table(train_csv, capsys):
    argv = [*base(train_csv), "--model", "sgd-mf", "--dim", "4", "--epochs", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sgd-mf (preset default) on ") and "training rows" in lines[0]
    assert lines[1].startswith("fit ") and "evaluation" in lines[1]
    assert lines[2].startswith("rmse ")


def test_threads_must_be_positive(capsys):
    assert main(["train", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


@pytest.fixture
def titled_run(tmp_path, capsys):
    """A run whose item ids are titles, some with commas."""
    rows = ["user,item"]
    titles = ["Heat (1995)", "Good, the Bad and the Ugly, The (1966)", "Fargo (1996)", "Up"]
    titles += [f"Film {i}" for i in range(10)]  # a catalogue larger than the metrics' k
    for u in range(8):
        for i, title in enumerate(titles):
            if (u + i) % 2 == 0 or i in (1, 3):
                rows.append(f'user{u},"{title}"')
    data = tmp_path / "titles.csv"
    data.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--train", str(data), "--model", "wals", "--dim", "2", "--epochs", "2",
                 "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    return run, titles


def test_history_items_may_contain_commas(titled_run, tmp_path, capsys):
    run, titles = titled_run
    argv = ["recommend", str(run), "--history-item", titles[1], "-k", "2", "--json"]
    assert main(argv) == 0
    items = {r["item"] for r in json.loads(capsys.readouterr().out)}
    assert titles[1] not in items and len(items) == 2
    listing = tmp_path / "history.txt"
    listing.write_text(f"{titles[1]}\n\n{titles[0]}\n")
    assert main(["recommend", str(run), "--history-file", str(listing), "-k", "2", "--json"]) == 0
    items = {r["item"] for r in json.loads(capsys.readouterr().out)}
    assert not items & {titles[0], titles[1]}


def test_history_errors_name_the_key_kind(titled_run, tmp_path, capsys):
    run, _ = titled_run
    assert main(["recommend", str(run), "--history-item", "Nope (2001)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown item 'Nope (2001)'") and "keyed by id" in err
    assert main(["recommend", str(run), "--history-file", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------ every option on every model, before any work
#: models not trained in epochs: no checkpoint, process group, validation split or trainer flag
NO_EPOCHS = {"most-popular", "ease", "rp3beta", "blend"}
#: each train option, its arguments, and the models that refuse it (all others accept it)
OPTIONS = {
    "--dim": (["--dim", "8"], NO_EPOCHS),
    "--epochs": (["--epochs", "1"], NO_EPOCHS),
    "--batch-size": (["--batch-size", "64"], NO_EPOCHS | {"wals"}),
    "--learning-rate": (["--learning-rate", "0.01"], NO_EPOCHS | {"wals"}),
    "--device": (["--device", "cpu"], {"most-popular", "blend"}),
    "--regularization": (
        ["--regularization", "1.0"],
        {
            "most-popular",
            "blend",
            "two-tower",
            "ranking",
            "multitask",
            "two-stage",
            "sequential",
            "rp3beta",
        },
    ),
    "--alpha": (["--alpha", "2.0"], "all but wals, rp3beta"),
    "--patience": (["--patience", "1", "--validation-fraction", "0.1"], NO_EPOCHS),
    "--validation-fraction": (["--validation-fraction", "0.1"], NO_EPOCHS),
    "--checkpoint-every": (["--checkpoint-every", "1", "--checkpoint-dir", "CKPT"], NO_EPOCHS),
    "--resume": (["--resume", "--checkpoint-dir", "CKPT"], NO_EPOCHS),
    "--nproc": (["--nproc", "2"], NO_EPOCHS),  # only the refusals run (accepted: it launches)
    "--budget": (["--budget", "1m"], "all"),
    "--metric": (["--metric", "recall@10"], "all"),
    "--user-features": (["--user-features", "FEATURES"], "all but ranking, two-stage"),
    "--preset": (["--preset", "seed"], set()),
    "--eval-users": (["--eval-users", "10"], set()),
    "--eval-memory": (["--eval-memory", "64MB"], set()),
    "--quiet": (["--quiet"], set()),
}


def _refused_by(spec, models):
    if spec == "all":
        return set(models)
    if spec == "all but wals, rp3beta":
        return set(models) - {"wals", "rp3beta"}
    if spec == "all but ranking, two-stage":
        return set(models) - {"ranking", "two-stage"}
    return spec


def _cases():
    from recfunnel.models import MODELS

    for flag, (_, spec) in OPTIONS.items():
        refused = _refused_by(spec, MODELS)
        for model in sorted(MODELS):
            if flag == "--nproc" and model not in refused:
                continue  # accepted: it would launch processes (tests/test_distributed.py)
            yield pytest.param(model, flag, model in refused, id=f"{model}{flag}")


@pytest.mark.parametrize("model, flag, refused", list(_cases()))
def test_every_option_works_or_is_refused_before_any_data_is_read(
    tmp_path, capsys, model, flag, refused
):
    # the training file does not exist: an accepted option gets as far as reading it
    argv, _ = OPTIONS[flag]
    argv = [a.replace("CKPT", str(tmp_path / "ckpt")).replace("FEATURES", str(tmp_path / "u.csv"))
            for a in argv]  # fmt: skip
    code = main(["train", "--train", str(tmp_path / "missing.csv"), "--model", model, *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    if refused:
        assert flag in err and "missing.csv" not in err, err
    else:
        assert "missing.csv" in err, err


def test_auto_refuses_options_it_cannot_use_before_any_data_is_read(tmp_path, capsys):
    missing = ["train", "--train", str(tmp_path / "missing.csv"), "--model", "auto"]
    for extra, message in (
        (["--preset", "seed"], "--preset does not apply to --model auto"),
        (["--checkpoint-every", "1"], "--checkpoint-every does not apply to --model auto"),
        (["--nproc", "2"], "--nproc does not apply to --model auto"),
        (["--set", "nope=1"], "no model of the portfolio"),
        (["--set", "epochs=0"], "epochs must be at least 1"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--budget", "soon"], "--budget must be"),
    ):
        assert main([*missing, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main([*missing, "--epochs", "2", "--budget", "1m"]) == 2
    assert "missing.csv" in capsys.readouterr().err  # accepted: reached the data


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--epochs", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --epochs") and err.count("\n") == 1, err


@pytest.mark.parametrize("given, expected", [("1", 1), ("3", 3), ("", None), ("zero", None)])
def test_threads_default_to_omp_num_threads_where_set(monkeypatch, given, expected):
    """``OMP_NUM_THREADS=1 recfunnel train ...`` runs one thread, as PyTorch itself would;
    unset (or not a number), the physical cores."""
    import torch

    from recfunnel.threads import THREAD_VARIABLES, physical_cores, set_threads

    before = torch.get_num_threads()
    for name in THREAD_VARIABLES:  # set_threads writes them all: put them back afterwards
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setenv("OMP_NUM_THREADS", given)
    try:
        assert set_threads() == (expected or physical_cores())
        assert torch.get_num_threads() == (expected or physical_cores())
    finally:
        torch.set_num_threads(before)
