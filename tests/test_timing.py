"""Side-by-side inference timing, on a fake clock: the median of the repeats after a warm-up, the models
interleaved on the same tokens, in inference mode, each put back in the mode it was in."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from sparsernn import timing
from sparsernn.timing import inference_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class TimedModel(nn.Module):
    """A model whose forward pass takes the next of ``durations`` seconds on the fake clock and records
    what it was given and how it was run."""

    def __init__(self, name: str, durations: list[float], clock: FakeClock, calls: list, with_state: bool) -> None:
        super().__init__()
        self.name, self.durations, self.clock, self.calls = name, list(durations), clock, calls
        self.weight = nn.Parameter(torch.zeros(1))
        if with_state:  # a language model: forward(tokens, state)
            self.init_state = lambda batch: ("state", batch)

    def forward(self, tokens, state=None):
        self.calls.append({"model": self.name, "tokens": tokens.clone(), "state": state, "training": self.training,
                           "inference": torch.is_inference_mode_enabled()})
        self.clock.now += self.durations.pop(0)
        return tokens


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_the_median_of_the_repeats_after_one_warm_up_each(clock):
    calls = []
    # first duration: the warm-up (excluded, however slow); then 5 repeats
    lm = TimedModel("lm", [9.0, 3.0, 1.0, 2.0, 50.0, 4.0], clock, calls, with_state=True)
    tagger = TimedModel("tagger", [9.0, 0.5, 0.25, 0.75, 0.5, 0.125], clock, calls, with_state=False)
    seconds = inference_seconds({"before": lm, "after": tagger}, vocab_size=7, batch=3, steps=5, repeats=5)
    assert seconds == {"before": 3.0, "after": 0.5}  # medians: an outlier (50 s) does not move them
    assert not lm.durations and not tagger.durations  # 1 warm-up + 5 repeats each, no more
    # warm-ups first, then the models interleaved: a slow moment of the machine hits both alike
    assert [c["model"] for c in calls] == ["lm", "tagger"] + ["lm", "tagger"] * 5


def test_every_pass_reads_the_same_tokens_in_inference_mode(clock):
    calls = []
    lm = TimedModel("lm", [1.0] * 4, clock, calls, with_state=True)
    tagger = TimedModel("tagger", [1.0] * 4, clock, calls, with_state=False)
    tagger.eval()
    inference_seconds({"a": lm, "b": tagger}, vocab_size=7, batch=10, steps=30, repeats=3, seed=4)
    tokens = calls[0]["tokens"]
    assert tokens.shape == (30, 10) and tokens.dtype == torch.int64  # the ISS paper's batch 10, 30 steps
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 7
    assert all(torch.equal(c["tokens"], tokens) for c in calls)
    expected = torch.randint(0, 7, (30, 10), generator=torch.Generator().manual_seed(4))
    assert torch.equal(tokens, expected)  # seeded: the same tokens every time it is run
    assert all(c["inference"] and not c["training"] for c in calls)  # eval mode, torch.inference_mode
    assert {c["state"] for c in calls if c["model"] == "lm"} == {("state", 10)}  # an LM gets its zero state
    assert {c["state"] for c in calls if c["model"] == "tagger"} == {None}
    assert lm.training and not tagger.training  # each back in the mode it was in
