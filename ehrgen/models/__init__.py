"""PromptBart (BART + demographic prompts), its conditional prompts and its training losses."""

from ehrgen.models.conditional_prompt import ConditionalPrompt
from ehrgen.models.losses import PromptBartLoss, cooccurrence_loss
from ehrgen.models.prompt_bart import DecodeOutput, EncoderOutput, PromptBart, PromptBartOutput

__all__ = [
    "ConditionalPrompt",
    "DecodeOutput",
    "EncoderOutput",
    "PromptBart",
    "PromptBartLoss",
    "PromptBartOutput",
    "cooccurrence_loss",
]
