"""The request id across gRPC: the gateway's channels send it as `x-request-id` metadata, every
server puts it into `libs.logs.REQUEST_ID` while it handles the call, so the log lines of a
model or media service name the HTTP request that caused them.

The id is the one the gateway accepted or made for the HTTP request (`X-Request-ID`); work
the dispatcher runs later carries the id of the request that created the task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc

from libs.logs import REQUEST_ID

METADATA_KEY = "x-request-id"
# What an id from outside may look like: anything else is replaced, so a log line cannot be forged.
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def valid(value: str | None) -> str | None:
    """The id when it is safe to log and echo, else None."""
    return value if value and _VALID.match(value) else None


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _ClientDetails(_Details, grpc.ClientCallDetails):
    pass


def _with_id(details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
    rid = REQUEST_ID.get()
    if rid == "-":
        return details
    metadata = [m for m in (details.metadata or ()) if m[0] != METADATA_KEY] + [(METADATA_KEY, rid)]
    return _ClientDetails(details.method, details.timeout, metadata, details.credentials,
                          getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


class RequestIdClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the current request id to every call made on the channel."""

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(_with_id(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(_with_id(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(_with_id(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(_with_id(client_call_details), request_iterator)


def channel_with_request_id(channel: grpc.Channel) -> grpc.Channel:
    """The channel, sending the current request id with every call."""
    return grpc.intercept_channel(channel, RequestIdClientInterceptor())


def _incoming(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return valid(value if isinstance(value, str) else value.decode(errors="replace"))
    return None


class RequestIdInterceptor(grpc.ServerInterceptor):
    """Sets `REQUEST_ID` from the call's metadata while the handler (or its stream) runs."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _stream(handler.stream_stream), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _unary(inner: Callable) -> Callable:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        token = REQUEST_ID.set(_incoming(context) or "-")
        try:
            return inner(request, context)
        finally:
            REQUEST_ID.reset(token)

    return unary


def _stream(inner: Callable) -> Callable:
    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # The server thread runs the whole stream; the id is set around each step of it.
        rid = _incoming(context) or "-"
        token = REQUEST_ID.set(rid)
        try:
            responses = iter(inner(request, context))
        finally:
            REQUEST_ID.reset(token)
        while True:
            token = REQUEST_ID.set(rid)
            try:
                item = next(responses)
            except StopIteration:
                return
            finally:
                REQUEST_ID.reset(token)
            yield item

    return stream
