"""Optimizers and learning-rate schedules, in exact numbers: NT-ASGD's SGD step, the epoch it switches to
averaging, the averages it evaluates with and what it checkpoints; the step decay of the learning rate
and which optimizer each config name builds."""

from __future__ import annotations

import pytest
import torch

from sparsernn.config import OptimConfig
from sparsernn.optim import NTASGD
from sparsernn.optim import build_optimizer, learning_rate
from sparsernn.train import Trainer

from conftest import tiny_config


def weights(*values: float) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def step_with(optimizer: NTASGD, param: torch.nn.Parameter, grad) -> None:
    param.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.step()


def test_before_averaging_a_step_is_plain_sgd_with_weight_decay():
    p = weights(1.0, -2.0)
    optimizer = NTASGD([p], lr=0.5, weight_decay=0.25)
    step_with(optimizer, p, [2.0, 4.0])
    # w - lr * (g + wd * w): 1 - 0.5 * (2 + 0.25) and -2 - 0.5 * (4 - 0.5)
    assert p.tolist() == [-0.125, -3.75]
    assert not optimizer.averaging and not optimizer.state  # nothing averaged yet
    with optimizer.averaged():  # a no-op before the switch
        assert p.tolist() == [-0.125, -3.75]


def test_a_parameter_without_a_gradient_is_left_alone():
    used, unused = weights(1.0), weights(5.0)
    optimizer = NTASGD([used, unused], lr=1.0)
    optimizer.averaging = True
    step_with(optimizer, used, [1.0])
    assert used.tolist() == [0.0] and unused.tolist() == [5.0]
    assert unused not in optimizer.state


@pytest.mark.parametrize("nonmono,losses,switch", [
    # the switch comes when a loss is worse than the best of all but the last `nonmono` epochs
    (2, [5.0, 4.0, 3.0, 2.9, 3.5, 3.2], 6),  # 3.2 > min(5, 4, 3): epoch 6
    (3, [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 4.5], 7),  # 3.6 > 5? 3.7 > 4? no; 4.5 > min(5, 4, 3): epoch 7
    (2, [1.0, 9.0, 9.0], None),  # needs more than `nonmono` epochs of history first
    (1, [4.0, 3.0, 2.0, 1.0, 0.5], None),  # improving every epoch: never
])
def test_nt_asgd_switches_at_the_first_non_monotone_epoch(nonmono, losses, switch):
    optimizer = NTASGD([weights(0.0)], lr=1.0, nonmono=nonmono)
    switched = [optimizer.observe(loss) for loss in losses]
    assert switched == [epoch == switch for epoch in range(1, len(losses) + 1)]
    assert optimizer.averaging == (switch is not None)
    assert optimizer.val_history == losses


def test_a_loss_equal_to_the_best_is_not_worse():
    optimizer = NTASGD([weights(0.0)], lr=1.0, nonmono=1)
    assert [optimizer.observe(v) for v in (3.0, 3.0, 3.0)] == [False, False, False]
    assert optimizer.observe(3.0 + 1e-9) and optimizer.averaging


def test_after_the_switch_it_stays_averaging_and_says_so_once():
    optimizer = NTASGD([weights(0.0)], lr=1.0, nonmono=1)
    assert [optimizer.observe(v) for v in (1.0, 0.5, 2.0, 3.0, 0.1)] == [False, False, True, False, False]
    assert optimizer.averaging


def test_the_average_covers_only_the_iterates_after_the_switch():
    p = weights(0.0, 10.0)
    optimizer = NTASGD([p], lr=1.0)
    for _ in range(2):  # plain SGD: iterates (1, 8), (2, 6) are not averaged
        step_with(optimizer, p, [-1.0, 2.0])
    optimizer.averaging = True
    for _ in range(3):  # averaged iterates (3, 4), (4, 2), (5, 0)
        step_with(optimizer, p, [-1.0, 2.0])
    assert p.tolist() == [5.0, 0.0]
    state = optimizer.state[p]
    assert state["n"].tolist() == [3.0, 3.0] and state["ax"].tolist() == pytest.approx([4.0, 2.0])
    with optimizer.averaged():  # evaluation sees the averages ...
        assert p.tolist() == pytest.approx([4.0, 2.0])
    assert p.tolist() == [5.0, 0.0]  # ... and training goes on from the live weights


def test_averaged_weights_are_restored_even_when_evaluation_fails():
    p = weights(0.0)
    optimizer = NTASGD([p], lr=1.0)
    optimizer.averaging = True
    for grad in ([-2.0], [-2.0]):  # iterates 2, 4: average 3
        step_with(optimizer, p, grad)
    with pytest.raises(RuntimeError, match="evaluation failed"), optimizer.averaged():
        assert p.tolist() == [3.0]
        raise RuntimeError("evaluation failed")
    assert p.tolist() == [4.0]


def test_a_position_never_averaged_keeps_its_weight():
    p = weights(1.0, 1.0)
    optimizer = NTASGD([p], lr=1.0)
    optimizer.averaging = True
    step_with(optimizer, p, [-1.0, -1.0])  # iterates (2, 2)
    optimizer.state[p]["n"][1] = 0.0  # as masking leaves a pruned position: no average there
    optimizer.state[p]["ax"][1] = 0.0
    step_with(optimizer, p, [-1.0, -1.0])  # iterates (3, 3): position 1's average restarts here
    with optimizer.averaged():
        assert p.tolist() == [2.5, 3.0]
    optimizer.state[p]["n"][1] = 0.0
    optimizer.state[p]["ax"][1] = 0.0
    with optimizer.averaged():
        assert p.tolist() == [2.5, 3.0]  # n == 0: the live weight, not the (zeroed) average


def test_the_switch_and_the_averages_survive_a_checkpoint():
    p = weights(0.0)
    optimizer = NTASGD([p], lr=1.0, nonmono=1)
    assert [optimizer.observe(loss) for loss in (1.0, 0.5, 2.0)] == [False, False, True]
    for grad in ([-1.0], [-3.0]):  # iterates 1, 4: average 2.5
        step_with(optimizer, p, grad)
    saved = optimizer.state_dict()
    assert saved["nt_asgd"] == {"averaging": True, "val_history": [1.0, 0.5, 2.0]}

    q = weights(4.0)
    restored = NTASGD([q], lr=1.0, nonmono=1)
    restored.load_state_dict(saved)
    assert restored.averaging and restored.val_history == [1.0, 0.5, 2.0]
    with restored.averaged():
        assert q.tolist() == [2.5]
    step_with(restored, q, [-2.0])  # iterate 6 joins the average: (1 + 4 + 6) / 3
    with restored.averaged():
        assert q.tolist() == pytest.approx([11 / 3])
    # a checkpoint without the NT-ASGD record (written before it was kept): not averaging, no history
    old = NTASGD([weights(0.0)], lr=1.0).state_dict()
    del old["nt_asgd"]
    restored.load_state_dict(old)
    assert not restored.averaging and restored.val_history == []


@pytest.mark.parametrize("decay,start,expected", [
    (0.5, 2, [20.0, 20.0, 10.0, 5.0, 2.5]),  # epochs 1..decay_start_epoch at lr, then halved each epoch
    (0.5, 0, [10.0, 5.0, 2.5, 1.25, 0.625]),  # decay_start_epoch 0: decayed from the first epoch
    (1.0, 0, [20.0] * 5),  # the default: constant
    (0.25, 4, [20.0, 20.0, 20.0, 20.0, 5.0]),
])
def test_the_learning_rate_decays_by_steps_after_the_start_epoch(decay, start, expected):
    config = OptimConfig(lr=20.0, lr_decay=decay, decay_start_epoch=start)
    assert [learning_rate(config, epoch) for epoch in range(1, 6)] == expected


def test_each_epoch_trains_at_its_scheduled_learning_rate(synthetic_corpus):
    config = tiny_config(model={"hidden_sizes": [8]}, data={"epoch_tokens": 8 * 10 * 2},
                         optim={"lr": 8.0, "lr_decay": 0.5, "decay_start_epoch": 1}, train={"epochs": 3})
    trainer = Trainer(config, synthetic_corpus)
    seen = []
    for _ in range(3):
        record = trainer.train_epoch()
        seen.append((record["lr"], trainer.optimizer.param_groups[0]["lr"]))
        trainer.advance_epoch()
    assert seen == [(8.0, 8.0), (4.0, 4.0), (2.0, 2.0)]


@pytest.mark.parametrize("name,kind,expected", [
    ("sgd", torch.optim.SGD, {"lr": 3.0, "momentum": 0.9, "weight_decay": 0.01}),
    ("adam", torch.optim.Adam, {"lr": 3.0, "weight_decay": 0.01}),
    ("nt_asgd", NTASGD, {"lr": 3.0, "weight_decay": 0.01}),
    ("asgd", torch.optim.ASGD, {"lr": 3.0, "weight_decay": 0.01, "t0": 0, "lambd": 0.0}),  # averaging from step 1
])
def test_each_optimizer_name_builds_that_optimizer_with_the_configs_settings(name, kind, expected):
    config = OptimConfig(name=name, lr=3.0, momentum=0.9, weight_decay=0.01, nonmono=7)
    optimizer = build_optimizer([weights(1.0)], config)
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert {key: group[key] for key in expected} == expected
    if name == "nt_asgd":
        assert optimizer.nonmono == 7 and not optimizer.averaging
