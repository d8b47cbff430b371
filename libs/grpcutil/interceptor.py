"""The one server interceptor that turns requests that break their proto's rules, and exceptions
that handlers raise, into gRPC statuses (as text-generation-inference's interceptor.py does).

Every request is checked against the `buf.validate` rules of its message (protovalidate)
before the handler sees it; a violation is INVALID_ARGUMENT with the error code
`invalid_request`. A handler (or a streaming handler's generator) only raises: the status,
message and stable error code come from `libs.grpcutil.errors.status_for`, never a stack
trace on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import protovalidate

from libs.grpcutil.errors import Classifier, InvalidRequest, status_for, to_status

log = logging.getLogger(__name__)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Validates requests and maps the exceptions of unary, server-streaming and bidirectional handlers to statuses."""

    def __init__(self, service: Classifier | None = None):
        # The service's own exceptions, classified before the common ones.
        self._service = service

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.request_streaming:
            if handler.stream_stream is None:
                return handler
            return grpc.stream_stream_rpc_method_handler(
                self._bidi(method, handler.stream_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.unary_stream_rpc_method_handler(
            self._stream(method, handler.unary_stream), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _unary(self, method: str, inner: Callable) -> Callable:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                _validate(request)
                return inner(request, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                self._abort(method, context, exc)

        return unary

    def _stream(self, method: str, inner: Callable) -> Callable:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                _validate(request)
                yield from inner(request, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                self._abort(method, context, exc)

        return stream

    def _bidi(self, method: str, inner: Callable) -> Callable:
        def bidi(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            def checked() -> Iterator[Any]:
                for request in requests:
                    _validate(request)  # raised in the handler's thread, or in its reader's (which passes it on)
                    yield request

            try:
                yield from inner(checked(), context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                self._abort(method, context, exc)

        return bidi

    def _abort(self, method: str, context: grpc.ServicerContext, exc: Exception) -> None:
        if context.code() not in (None, grpc.StatusCode.OK):  # type: ignore[attr-defined]
            raise exc  # the handler ended the RPC itself (context.abort)
        failure = status_for(exc, self._service)
        if failure.status == grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", method, failure.message, exc_info=exc)
        elif failure.status != grpc.StatusCode.CANCELLED:
            log.info("%s refused: %s (%s)", method, failure.code, failure.message)
        context.abort_with_status(to_status(failure))


def _validate(request: Any) -> None:
    """Raise InvalidRequest when the request breaks a `buf.validate` rule of its proto."""
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as exc:
        raise InvalidRequest(str(exc)) from exc
