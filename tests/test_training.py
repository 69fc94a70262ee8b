import pytest
import torch
from torch import nn

from recfunnel.data import Interactions
from recfunnel.errors import RecfunnelError, TrainingError
from recfunnel.training import Trainer, TrainerConfig


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def compute_loss(self, batch):
        return self.w.sum() * float("nan")


class ClosedForm:
    """A model with a closed-form update: the trainer calls fit_epoch."""

    def __init__(self):
        self.calls = 0

    def fit_epoch(self):
        self.calls += 1
        return 1.0 / self.calls

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class Drifting(nn.Module):
    """w grows by the step size at every step (plain SGD on -w)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def compute_loss(self, batch):
        return -self.w.sum()


DATA = Interactions([0, 1], [1, 0], 2, 2)


def test_nan_loss_stops_with_a_clear_error():
    with pytest.raises(TrainingError, match="diverged at epoch 1 .* lower the learning rate"):
        Trainer(epochs=2, batch_size=2).fit(Exploding(), DATA)


def test_closed_form_models_run_their_epochs():
    model = ClosedForm()
    history = Trainer(epochs=4).fit(model, DATA)
    assert model.calls == 4
    assert [e["loss"] for e in history.epochs] == [1.0, 0.5, 1 / 3, 0.25]


def test_bad_settings_are_named():
    with pytest.raises(RecfunnelError, match="epochs"):
        TrainerConfig(epochs=0)
    with pytest.raises(
        RecfunnelError, match="optimizer must be one of adagrad, adam, adamw, sgd, not 'lbfgs'"
    ):
        Trainer(optimizer="lbfgs").fit(Exploding(), DATA)


def test_early_stopping_restores_the_best_epochs_state():
    """Validation peaks at epoch 2; with patience 2 training stops after epoch 4 and the
    model's state must be epoch 2's again (fails if the restore is skipped)."""
    model = ClosedForm()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.1, 0.0])
    log = Trainer(epochs=6, patience=2).fit(
        model, DATA, validate=lambda: {"recall@10": next(scores)}
    )
    assert log.best_epoch == 2 and log.stopped_early and len(log.epochs) == 4
    assert model.calls == 2


def test_early_stopping_restores_a_networks_weights():
    net = Drifting()
    trainer = Trainer(TrainerConfig(epochs=10, batch_size=2, optimizer="sgd", learning_rate=1.0,
                                    patience=1, monitor="rmse"))  # fmt: skip
    log = trainer.fit(net, DATA, validate=lambda: {"rmse": abs(float(net.w.detach()) - 3.0)})
    assert log.best_epoch == 3 and len(log.epochs) == 4
    assert float(net.w.detach()) == 3.0


@pytest.mark.parametrize(("schedule", "moved"), [("constant", 4.0), ("linear", 2.5)])
def test_the_learning_rate_schedule_sets_each_steps_size(schedule, moved):
    """Four one-step epochs at learning rate 1: constant steps 1 + 1 + 1 + 1; linear steps
    fall with the rows trained out of the 8 planned: 1 + 0.75 + 0.5 + 0.25."""
    net = Drifting()
    Trainer(epochs=4, batch_size=2, optimizer="sgd", learning_rate=1.0,
            lr_schedule=schedule).fit(net, DATA)  # fmt: skip
    assert float(net.w.detach()) == pytest.approx(moved)


def test_a_linear_schedule_counts_max_examples_as_the_plan():
    net = Drifting()  # 2 planned rows: the one step of 2 rows is at the full rate, then none
    Trainer(epochs=4, batch_size=2, optimizer="sgd", learning_rate=1.0, lr_schedule="linear",
            max_examples=2).fit(net, DATA)  # fmt: skip
    assert float(net.w.detach()) == pytest.approx(1.0)


def test_lazy_adam_moves_the_rows_sparse_adam_moves_by_the_same_amounts():
    from recfunnel.training import LazyAdam

    torch.manual_seed(0)
    ours = nn.Embedding(50, 4, sparse=True)
    theirs = nn.Embedding(50, 4, sparse=True)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = LazyAdam(ours.parameters(), lr=0.05)
    opt_theirs = torch.optim.SparseAdam(theirs.parameters(), lr=0.05)
    untouched = torch.arange(40, 50)  # never in a batch: must not move at all
    start = ours.weight.detach()[untouched].clone()
    for _ in range(12):
        ids = torch.randint(0, 40, (16,))  # repeats: the sparse gradient is uncoalesced
        target = torch.randn(16, 4)
        for net, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            (net(ids) - target).pow(2).sum().backward()
            opt.step()
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours.weight.detach()[untouched], start)
    # the same state, so a checkpoint of one loads into the other
    opt_theirs.load_state_dict(opt_ours.state_dict())
