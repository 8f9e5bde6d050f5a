"""PairBuffer: dedup, eviction, verified-only, thread safety, recency- and diversity-aware sampling."""

from __future__ import annotations

import collections
import random
import threading

import pytest

from contextrl.errors import ConfigError
from contextrl.miner.buffer import PairBuffer, group_of
from contextrl.miner.pair import Check, Context, ContrastivePair, Provenance, Verdict
from contextrl.trajectory import Trajectory

OK = Verdict.from_checks([Check("identical", True, "contexts differ")])
BAD = Verdict.from_checks([Check("identical", False, "contexts are identical")])


def make_pair(i: int, source: str = "", task: str = "", verdict: Verdict | None = OK) -> ContrastivePair:
    traj = Trajectory(task_id=task or f"task-{i}")
    return ContrastivePair(
        kind="trajectory", query=f"q{i}", answer=f"a{i}",
        positive=Context(text=f"pos {i}\n", trajectory=traj), negative=Context(text=f"neg {i}\n"),
        provenance=Provenance(miner="branch", sources=(source or f"ep-{i}", task or f"task-{i}")), verdict=verdict,
    )


def test_add_dedups_and_rejects_unverified():
    buf = PairBuffer(capacity=10)
    assert buf.add([make_pair(1), make_pair(2), make_pair(1)]) == 2
    assert buf.add(make_pair(2)) == 0
    assert buf.add([make_pair(3, verdict=None), make_pair(4, verdict=BAD)]) == 0
    assert len(buf) == 2 and make_pair(1) in buf and make_pair(1).id in buf and make_pair(3) not in buf
    st = buf.stats()
    assert st["added"] == 2 and st["duplicates"] == 2 and st["unverified"] == 2 and st["size"] == 2
    loose = PairBuffer(capacity=10, require_verified=False)
    assert loose.add([make_pair(3, verdict=None)]) == 1


def test_evicts_the_oldest_beyond_capacity():
    buf = PairBuffer(capacity=3)
    buf.add([make_pair(i) for i in range(5)])
    assert [p.query for p in buf.snapshot()] == ["q2", "q3", "q4"]
    assert buf.stats()["evicted"] == 2
    assert buf.add(make_pair(0)) == 1  # evicted pairs may come back
    assert [p.query for p in buf.snapshot()] == ["q3", "q4", "q0"]
    buf.clear()
    assert len(buf) == 0 and buf.sample(3) == []


def test_thread_hammer_keeps_invariants():
    buf = PairBuffer(capacity=50, seed=1)
    pairs = [make_pair(i, source=f"ep-{i % 7}") for i in range(200)]
    added = collections.Counter()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        rnd = random.Random(k)
        try:
            for _ in range(300):
                added[k] += buf.add(rnd.sample(pairs, 3))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(300):
                got = buf.sample(8)
                assert len({p.id for p in got}) == len(got) <= 8
                assert len(buf.snapshot()) <= 50
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    snap = buf.snapshot()
    st = buf.stats()
    assert len(snap) == len({p.id for p in snap}) == 50
    assert st["added"] == sum(added.values()) and st["added"] - st["evicted"] == 50
    assert st["added"] + st["duplicates"] == 6 * 300 * 3


def test_sampling_favours_recent_pairs():
    buf = PairBuffer(capacity=1000, seed=0)
    buf.add([make_pair(i) for i in range(100)])
    newest = collections.Counter()
    uniform = collections.Counter()
    for _ in range(300):
        newest.update(int(p.query[1:]) >= 75 for p in buf.sample(5, recency_weight=1.0))
        uniform.update(int(p.query[1:]) >= 75 for p in buf.sample(5, recency_weight=0.0))
    share_recent = newest[True] / sum(newest.values())
    share_uniform = uniform[True] / sum(uniform.values())
    # default half-life = a quarter of the buffer: the newest quarter holds ~53% of the weight
    assert 0.45 < share_recent < 0.62 and 0.18 < share_uniform < 0.32
    strong = collections.Counter(int(p.query[1:]) for _ in range(200) for p in buf.sample(1, half_life=2.0))
    assert strong.most_common(1)[0][0] == 99 and min(strong) >= 80


def test_sampling_keeps_diversity_across_sources():
    buf = PairBuffer(capacity=100, seed=3)
    # ten pairs from one recent trajectory, then one pair each from four older ones
    buf.add([make_pair(100 + i, source="old-" + str(i)) for i in range(4)])
    buf.add([make_pair(i, source="hot") for i in range(10)])
    for _ in range(50):
        got = buf.sample(5)
        sources = [p.provenance.sources[0] for p in got]
        assert len(got) == 5 and len(set(sources)) == 5  # one per trajectory while groups remain
    got = buf.sample(7)
    assert sorted(p.provenance.sources[0] for p in got).count("hot") == 3  # second round reuses groups
    by_task = buf.sample(5, group_by="task")
    assert len({group_of(p, "task") for p in by_task}) == 5
    assert len(buf.sample(100)) == 14  # n beyond the size returns everything once
    assert len(buf.sample(4, group_by=lambda p: "one")) == 4


def test_sampling_is_deterministic_for_a_seed_and_checks_arguments():
    a, b = PairBuffer(seed=7), PairBuffer(seed=7)
    for buf in (a, b):
        buf.add([make_pair(i, source=f"ep-{i % 3}") for i in range(30)])
    assert [p.id for p in a.sample(6)] == [p.id for p in b.sample(6)]
    assert [p.id for p in a.sample(6, rng=random.Random(1))] == [p.id for p in b.sample(6, rng=random.Random(1))]
    with pytest.raises(ConfigError, match="capacity"):
        PairBuffer(capacity=0)
    with pytest.raises(ConfigError, match="recency_weight"):
        a.sample(2, recency_weight=-1)
    with pytest.raises(ConfigError, match="half_life"):
        a.sample(2, half_life=0)
    assert a.sample(0) == []
