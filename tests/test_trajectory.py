"""Trajectory records and JSONL: round trips, crash-safe episode logs, clear errors."""

from __future__ import annotations

import json

import pytest

from contextrl.errors import TrajectoryFormatError
from contextrl.trajectory import EpisodeLog, Failure, Step, Trajectory, read_trajectories, write_trajectories


def _traj(i: int = 0) -> Trajectory:
    steps = (Step(0, "bash", {"command": "ls"}, "a.py\n", exit_code=0, duration_s=0.01),
             Step(1, "edit", {"command": "create", "path": "a.py", "file_text": "x"}, "Created", error=None))
    return Trajectory(task_id=f"t{i}", steps=steps, reward=1.0, resolved=True, outcome="submitted", diff="--- a\n+++ b\n",
                      metadata={"repo": "r"})


def test_collection_roundtrip(tmp_path):
    path = tmp_path / "c.jsonl"
    assert write_trajectories(path, [_traj(0), _traj(1)]) == 2
    back = list(read_trajectories(path))
    assert back == [_traj(0), _traj(1)] and back[0].steps[1].args["file_text"] == "x"


def test_episode_log_survives_a_crash(tmp_path):
    path = tmp_path / "ep.jsonl"
    log = EpisodeLog(path, {"task_id": "t", "episode_id": "e1", "source": "env"})
    log.step(Step(0, "bash", {"command": "echo 1"}, "1\n"))
    log.step(Step(1, "bash", {"command": "echo 2"}, "2\n"))
    # no end(): the process "crashed" here
    (t,) = list(read_trajectories(path))
    assert len(t.steps) == 2 and t.outcome == "failed" and t.failure.boundary == "env"
    log.end(Trajectory(task_id="t", steps=t.steps, outcome="submitted", reward=0.5, episode_id="e1"))
    (t2,) = list(read_trajectories(path))
    assert t2.outcome == "submitted" and t2.reward == 0.5 and len(t2.steps) == 2


def test_failure_roundtrip_and_version_check(tmp_path):
    t = Trajectory(task_id="x", outcome="failed", failure=Failure("sandbox", "container died"))
    path = tmp_path / "f.jsonl"
    write_trajectories(path, [t])
    assert list(read_trajectories(path))[0].failure == Failure("sandbox", "container died")
    d = t.to_dict()
    d["format_version"] = 99
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(TrajectoryFormatError, match="format_version=99"):
        list(read_trajectories(path))


@pytest.mark.parametrize("content,match", [
    ("{not json\n", "not valid JSON"),
    ('{"steps": []}\n', "missing field"),
    ('{"event": "step", "index": 0}\n', "before any 'start'"),
    ('[1, 2]\n', "expected a JSON object"),
])
def test_malformed_files_name_the_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TrajectoryFormatError, match=match) as ei:
        list(read_trajectories(path))
    assert "bad.jsonl:1" in str(ei.value)
