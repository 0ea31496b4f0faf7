"""The probing engine: the adapter interface, the adapter registry and the checkpoint sweep."""
from vlground.engine.adapter import (
    Adapter,
    AttentionSites,
    Capability,
    Checkpoint,
    LoadedModel,
    ProbeBatch,
    ProbeItem,
    gather_target_logprobs,
)
from vlground.engine.registry import get_adapter_class, known_adapters, register_adapter

__all__ = [
    "Adapter", "AttentionSites", "Capability", "Checkpoint", "LoadedModel", "ProbeBatch", "ProbeItem",
    "gather_target_logprobs", "get_adapter_class", "known_adapters", "register_adapter",
]
