"""Where a task's objects live in the store, and object references for gRPC messages."""

from libs.tasks import task_prefix
from talkserve.common.v1 import common_pb2


def task_key(task_id: str, *parts: str) -> str:
    """`tasks/<id>/<parts...>`: every input, intermediate and output of a task sits under it."""
    return task_prefix(task_id) + "/".join(parts)


def ref(key: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(key=key)
