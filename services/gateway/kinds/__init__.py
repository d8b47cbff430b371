"""Every kind of task the gateway runs, in one explicit registry.

Adding a kind is one module (its parameters model, its proto request, its runner, its
`KIND`) and one line below; docs/architecture.md walks through the DICE-Talk kind.
"""

from __future__ import annotations

from typing import Any

from services.gateway.kinds import (
    chat,
    dicetalk,
    echomimic,
    echomimic_multi,
    latentsync,
    person_generate,
    person_train,
)
from services.gateway.kinds.base import JobKind, NativeKind

KINDS: dict[str, JobKind[Any]] = {kind.name: kind for kind in (
    echomimic.KIND,
    echomimic_multi.KIND,
    dicetalk.KIND,
    latentsync.KIND,
    person_train.KIND,
    person_generate.KIND,
    chat.KIND,
)}

# The kinds talkserve's own API offers, by their name there (portrait, emotion, redub).
NATIVE: dict[str, JobKind[Any]] = {kind.native.name: kind for kind in KINDS.values() if kind.native is not None}



def api_name(task_kind: str) -> str:
    """A task kind's name as clients see it: its name in the native API (portrait, emotion, redub)
    where it has one, else the task kind itself (echomimic_multi, chat, ...). Job bodies and
    metric labels use it."""
    kind = KINDS.get(task_kind)
    return kind.native.name if kind is not None and kind.native is not None else task_kind


__all__ = ["KINDS", "NATIVE", "JobKind", "NativeKind", "api_name"]
