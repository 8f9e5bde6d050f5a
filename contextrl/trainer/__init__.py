"""Training: GRPO (TRL's `GRPOTrainer`) plus the context-awareness loss L_CA on pair batches.

Import cost: this package imports torch, transformers and TRL (the `train` extra).
"""

from contextrl.trainer.config import MODES, ContextRLConfig, Mode
from contextrl.trainer.loss import CALossOutput, OptionTokens, ca_loss, ca_margin, selection_ce
from contextrl.trainer.pairs import (
    CallablePairSource,
    MixedPairSource,
    PairSource,
    SelectionBatch,
    StaticPairSource,
    as_pair_source,
    encode_selection_batch,
    parse_option,
    selection_logits,
    selection_reward,
)
from contextrl.trainer.trainer import ContextRLTrainer
from contextrl.trainer.vlm import encode_image_selection_batch, freeze_vision_tower, load_vlm_policy, vision_tower

__all__ = [
    "MODES", "ContextRLConfig", "Mode", "CALossOutput", "OptionTokens", "ca_loss", "ca_margin", "selection_ce",
    "CallablePairSource", "MixedPairSource", "PairSource", "SelectionBatch", "StaticPairSource", "as_pair_source",
    "encode_selection_batch", "parse_option", "selection_logits", "selection_reward", "ContextRLTrainer",
    "encode_image_selection_batch", "freeze_vision_tower", "load_vlm_policy", "vision_tower",
]
