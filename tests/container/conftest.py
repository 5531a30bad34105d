"""The container tests run only where .ci/container.sh has built the image and started
a Docker daemon (it sets VLSERVE_TEST_IMAGE); elsewhere they are skipped, saying so."""

from __future__ import annotations

import pytest

from .docker import IMAGE, docker


def pytest_collection_modifyitems(config, items):
    if IMAGE:
        return
    skip = pytest.mark.skip(reason="needs the image and daemon of .ci/container.sh (VLSERVE_TEST_IMAGE unset)")
    for item in items:
        if "/container/" in str(item.path):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def image_is_there():
    if IMAGE:
        docker("image", "inspect", IMAGE)
