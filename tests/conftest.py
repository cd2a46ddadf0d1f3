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
def _empty_weight_cache(tmp_path_factory, monkeypatch):
    """No test sees the user's weight cache (cresshift fetch): CRESSHIFT_CACHE is an empty folder."""
    monkeypatch.setenv("CRESSHIFT_CACHE", str(tmp_path_factory.mktemp("cresshift-cache")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and reproducibly) on one thread; oversubscribed CPUs are very slow.

    Modules that train or sample tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
