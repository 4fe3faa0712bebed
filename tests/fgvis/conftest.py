"""Fixtures of the engine tests."""
from __future__ import annotations

import pytest
from fgvis_helpers import toy_images, train_toy


@pytest.fixture(scope="session")
def toy():
    """(model, images, labels): the trained 11-class toy and one test image per pattern class."""
    model = train_toy()
    images, labels = toy_images(10, seed=5)
    return model, images, labels
