"""Runs last (by name): after everything above, no container of this test run remains."""

from __future__ import annotations

import time

import pytest

from contextrl.sandboxes.dockerclient import RUN_ID


@pytest.mark.docker
def test_no_contextrl_container_of_this_run_remains():
    from contextrl.sandboxes.admin import list_containers

    deadline = time.time() + 30  # pools close released sandboxes in the background
    left = list_containers(run=RUN_ID)
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = list_containers(run=RUN_ID)
    assert left == [], f"leaked containers: {[c.name for c in left]}"
