import pytest

from tests.bundles import build_small_bundle


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A four-head linear bundle trained on 400 corpus records (built once per run)."""
    return build_small_bundle(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def small_model(small_bundle):
    from triage.model import load

    return load(small_bundle)
