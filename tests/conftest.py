"""Shared fixtures. `ray_session`: one local Ray for the whole test session (starting one takes seconds)."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
