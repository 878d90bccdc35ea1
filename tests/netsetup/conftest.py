"""The fixture every node-setup test starts from: a fresh network namespace of its own (root needed)."""
from __future__ import annotations

import pytest

from tests.conftest import require_root
from tests.netsetup.netns import Netns


@pytest.fixture
def ns():
    require_root()
    with Netns() as netns:
        yield netns
