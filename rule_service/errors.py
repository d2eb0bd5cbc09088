"""Error bodies and handlers: every 4xx names the field, the value and the limit."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

from rule_service.limits import InputError, show_value


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def describe_validation_error(error: dict[str, Any]) -> str:
    field = _location(error.get("loc", ()))
    if error.get("type") == "missing":
        return f"{field}: field required"
    message = f"{field}: {error.get('msg', 'invalid value')}"
    if "input" in error and error.get("type") != "extra_forbidden":
        message += f" (got {show_value(error['input'])})"
    return message


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "-")


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        ctx = json_errors[0].get("ctx") or {}
        message = f"request body is not valid JSON: {ctx.get('error', 'decode error')}"
        logger.info("request %s rejected: invalid JSON", _request_id(request))
        return JSONResponse({"message": message, "detail": None}, status_code=400)

    message = "; ".join(describe_validation_error(e) for e in errors)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    logger.info("request %s rejected: %d validation error(s)", _request_id(request), len(errors))
    return JSONResponse({"message": message, "detail": detail}, status_code=422)


async def _input_error_handler(request: Request, exc: InputError) -> JSONResponse:
    logger.info("request %s rejected: field %s", _request_id(request), exc.field)
    detail = [{"loc": [exc.location, *exc.field.split(".")], "msg": exc.reason, "type": "limit"}]
    return JSONResponse({"message": str(exc), "detail": detail}, status_code=exc.status_code)


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"message": message, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed: %s %s", _request_id(request), request.method, request.url.path)
    return JSONResponse(
        {"message": f"internal error; quote request id {_request_id(request)} when reporting it", "detail": None},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(InputError, _input_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled_handler)
