"""Our Euler-ancestral arithmetic equals diffusers' scheduler bit for bit, and the loop's pacing keeps progress in order."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from instantmesh.zero123plus.euler_ancestral import EulerAncestralSchedule  # noqa: E402
from instantmesh.zero123plus.sampling import StepPacer  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]

V12_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
"""Zero123++ v1.2's schedule (instantmesh/configs/zero123plus-v1.2.json)."""


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_steps_equal_the_scheduler_bit_for_bit(prediction_type: str, spacing: str) -> None:
    scheduler = diffusers.EulerAncestralDiscreteScheduler(
        prediction_type=prediction_type, timestep_spacing=spacing, **V12_BETAS
    )
    ours = EulerAncestralSchedule(scheduler, 12, torch.device("cpu"))
    theirs_generator, our_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 6, 5) * scheduler.init_noise_sigma
    assert ours.init_noise_sigma == scheduler.init_noise_sigma
    theirs = ours_sample = sample
    for i, t in enumerate(scheduler.timesteps):
        output = torch.randn(2, 4, 6, 5)
        assert torch.equal(scheduler.scale_model_input(theirs, t), ours.scale_model_input(ours_sample, i))
        theirs = scheduler.step(output, t, theirs, generator=[theirs_generator, theirs_generator], return_dict=False)[0]
        noise = torch.cat([torch.randn(1, 4, 6, 5, generator=our_generator) for _ in range(2)])
        ours_sample = ours.step(output, i, ours_sample, noise)
        assert torch.equal(theirs, ours_sample), f"step {i}"
    assert torch.equal(ours.timesteps, scheduler.timesteps)


@pytest.mark.parametrize("steps", [1, 3, 28, 75])
@pytest.mark.parametrize("spacing", ["trailing", "linspace", "leading"])
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear"])
def test_the_schedule_from_the_config_alone_equals_the_schedulers(steps: int, spacing: str, beta_schedule: str) -> None:
    """A start without diffusers computes the schedule from scheduler_config.json: the same numbers, bit for bit."""
    config = {
        **V12_BETAS,
        "beta_schedule": beta_schedule,
        "timestep_spacing": spacing,
        "prediction_type": "v_prediction",
    }
    scheduler = diffusers.EulerAncestralDiscreteScheduler(**config)
    theirs = EulerAncestralSchedule(scheduler, steps, torch.device("cpu"))
    ours = EulerAncestralSchedule.from_config(dict(scheduler.config), steps, torch.device("cpu"))
    assert torch.equal(ours.timesteps, theirs.timesteps) and torch.equal(ours.sigmas, theirs.sigmas)
    assert ours.init_noise_sigma == theirs.init_noise_sigma and ours.prediction_type == "v_prediction"


def test_a_config_the_schedule_cannot_follow_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule 'squaredcos_cap_v2' with spacing 'trailing' is not supported"):
        EulerAncestralSchedule.from_config(
            {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing"}, 4, torch.device("cpu")
        )
    with pytest.raises(ValueError, match="zero-SNR"):
        EulerAncestralSchedule.from_config({"rescale_betas_zero_snr": True}, 4, torch.device("cpu"))


def test_unknown_prediction_type_is_refused() -> None:
    scheduler = diffusers.EulerAncestralDiscreteScheduler(**V12_BETAS)
    scheduler.register_to_config(prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type 'sample' is not supported"):
        EulerAncestralSchedule(scheduler, 4, torch.device("cpu"))


class FakeEvent:
    """Stands in for a CUDA event: the log shows when each step was queued and waited for."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.step = sum(entry.startswith("record") for entry in log)

    def record(self) -> None:
        self.log.append(f"record {self.step}")

    def synchronize(self) -> None:
        self.log.append(f"wait {self.step}")


@pytest.mark.parametrize("ahead", [0, 2])
def test_pacer_reports_a_step_once_it_finished_with_at_most_ahead_queued(ahead: int) -> None:
    log: list[str] = []
    pacer = StepPacer(ahead, lambda: FakeEvent(log))
    for step in range(4):
        pacer.queued(lambda step=step: log.append(f"done {step}"))
        queued = sum(e.startswith("record") for e in log) - sum(e.startswith("wait") for e in log)
        assert queued <= ahead
    pacer.drain()
    assert [e for e in log if e.startswith("done")] == [f"done {i}" for i in range(4)]
    for i in range(4):  # reported after its own wait, and not before `ahead` later steps were queued
        assert log.index(f"wait {i}") < log.index(f"done {i}")
        assert log.index(f"record {min(i + ahead, 3)}") < log.index(f"done {i}")


def test_pacer_without_events_reports_at_once() -> None:
    done: list[int] = []
    pacer = StepPacer(2, None)
    pacer.queued(lambda: done.append(0))
    assert done == [0]
