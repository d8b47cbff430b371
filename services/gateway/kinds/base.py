"""What a kind of task is: its parameters model, the model service that runs it, its runner.

A task record stores its kind's parameters as the model's JSON (`JobKind.dump`); the runner
reads them back through the same model (`JobKind.load`), so a parameter is validated once,
when the task is created, and has one type from the request to the proto request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from libs.tasks import TaskRecord
from services.gateway.faults import TaskFailed
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from services.gateway.pipeline import Pipeline, Run

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class NativeKind:
    """How talkserve's own API (`/v1/jobs`) offers a kind: its name there and its inputs."""

    name: str  # portrait, emotion, redub
    summary: str
    inputs: tuple[str, ...]  # file fields, each also accepted as `<field>_url`
    params: type[BaseModel]  # the fields a client may send
    # True: URL inputs are fetched by the runner when the job runs (redub); otherwise at
    # creation, so a bad portrait or an unreachable URL is reported at once.
    fetch_when_run: bool = False


@dataclass(frozen=True)
class JobKind(Generic[P]):
    """One kind of task, as the dispatcher runs it."""

    name: str  # the task kind a record names: dicetalk, echomimic_multi, chat, ...
    service: str  # the model service whose replicas run it (a key of GatewaySettings.model_targets)
    params: type[P]  # its parameters, as stored in the record
    run: Callable[[Pipeline, Run, P], None]  # runs one unit (the task, or one of its segments)
    # Number of units of a task run in parts (clips); None: the task is one unit.
    segments: Callable[[P], int] | None = None
    finish: Callable[[Pipeline, Run, P], None] | None = None  # after the last segment
    native: NativeKind | None = None
    # Checks that need the gateway's settings (ValueError with the message for the client).
    check: Callable[[P, GatewaySettings], None] | None = None
    # Store only the parameters that were set (the EchOfU records name only what applies).
    sparse: bool = False

    def dump(self, params: P) -> dict[str, Any]:
        """The parameters as the task record stores them."""
        return params.model_dump(mode="json", exclude_unset=self.sparse)

    def load(self, record: TaskRecord) -> P:
        """The record's parameters, read back through the kind's model."""
        try:
            return self.params.model_validate(record.params)
        except ValidationError as exc:
            raise TaskFailed(f"the task's parameters are not valid {self.name} parameters: {exc}",
                             "invalid_params") from exc

    def pending_units(self, record: TaskRecord) -> list[int | None]:
        """The units of a task still to run: its segments without output, or the task itself."""
        if self.segments is None:
            return [None]
        return [i for i in range(self.segments(self.load(record))) if f"segment_{i}" not in record.outputs]
