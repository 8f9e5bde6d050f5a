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
