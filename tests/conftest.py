import numpy as np
import pytest
import torch

from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule


@pytest.fixture(scope="session")
def v1() -> ResShiftSchedule:
    return ResShiftSchedule.from_config("realsr-x4-v1")


@pytest.fixture(scope="session")
def exp_v1(v1) -> ExpAlphaSchedule:
    return ExpAlphaSchedule.fit(v1, warn=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
