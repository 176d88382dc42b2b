import pytest


@pytest.fixture(scope="session")
def micro_zoo():
    """The built-in micro zoo (built once into cache/ and reused)."""
    from tatr_core.zoo import load_zoo

    return load_zoo("micro")
