"""Contrastive pair mining: records, rendering for the policy, and shortcut verification."""

from contextrl.miner.pair import (
    Context,
    ContrastivePair,
    Difference,
    Verdict,
    dedupe_pairs,
    pairs_to_dataset,
    read_pairs,
    text_difference,
    write_pairs,
)
from contextrl.miner.render import render_trajectory, selection_prompt
from contextrl.miner.verify import VerifyConfig, verify_pair, verify_pairs

__all__ = ["Context", "ContrastivePair", "Difference", "Verdict", "dedupe_pairs", "pairs_to_dataset", "read_pairs",
           "text_difference", "write_pairs", "render_trajectory", "selection_prompt", "VerifyConfig", "verify_pair",
           "verify_pairs"]


def __getattr__(name: str):
    """Heavier miners load on first use: `BranchMiner`, `OnlineBranchMiner`, `PairBuffer`,
    `ConditionFilterMiner`, `run_mining_job`, `write_report`."""
    lazy = {
        "BranchConfig": "contextrl.miner.branch", "BranchMiner": "contextrl.miner.branch",
        "OnlineBranchMiner": "contextrl.miner.online", "PairBuffer": "contextrl.miner.buffer",
        "FilterConfig": "contextrl.miner.filter", "ConditionFilterMiner": "contextrl.miner.filter",
        "Funnel": "contextrl.miner.funnel", "run_mining_job": "contextrl.miner.jobs",
        "write_report": "contextrl.miner.report",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(name)
