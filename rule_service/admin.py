"""Admin routes (index reload, guarded by ASCL_ADMIN_TOKEN) and the SIGHUP reload handler."""

import asyncio
import hmac
import logging
import os
import signal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rule_service.reload import Reloader, ReloadInProgressError
from rule_service.schemas import ErrorResponse, ReloadStatus

logger = logging.getLogger(__name__)

_admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken", description="The value of ASCL_ADMIN_TOKEN.")


def _matches(supplied: bytes, secret: Any) -> bool:
    # compare_digest takes time independent of where the strings differ.
    return secret is not None and hmac.compare_digest(supplied, secret.get_secret_value().encode())


async def require_admin_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]
) -> None:
    """Reject the request unless it carries ASCL_ADMIN_TOKEN as a bearer token.

    A missing or wrong token gets 401. The API key gets 403, because it is a
    valid credential that does not grant admin access.
    """
    settings = request.app.state.settings
    request_id = getattr(request.state, "request_id", "-")
    supplied = credentials.credentials.encode() if credentials else b""
    if credentials and _matches(supplied, settings.admin_token):
        return
    if credentials and _matches(supplied, settings.api_key):
        logger.warning("admin request %s rejected: sent the API key instead of the admin token", request_id)
        raise HTTPException(status_code=403, detail="the API key does not grant admin access; send ASCL_ADMIN_TOKEN")
    logger.warning("admin request %s rejected: missing or wrong admin token", request_id)
    raise HTTPException(
        status_code=401,
        detail="missing or invalid admin token; send it as 'Authorization: Bearer <ASCL_ADMIN_TOKEN>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def admin_router() -> APIRouter:
    """Build the `/v1/admin` routes; the app mounts them only when ASCL_ADMIN_TOKEN is set."""
    router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin_token)])
    auth_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorResponse, "description": "Missing or wrong admin token."},
        403: {"model": ErrorResponse, "description": "The API key was sent instead of the admin token."},
    }

    @router.post(
        "/reload",
        status_code=202,
        response_model=ReloadStatus,
        responses={**auth_errors, 409: {"model": ErrorResponse, "description": "A reload is already running."}},
    )
    async def start_reload(request: Request, response: Response) -> ReloadStatus:
        """Rebuild every ruleset's index from the corpus in the background, then swap it in.

        The old index serves until the new one is ready, and keeps serving if
        the corpus is invalid. Poll the `Location` URL for the outcome.
        """
        reloader: Reloader = request.app.state.reloader
        try:
            record = reloader.start("http", request_id=getattr(request.state, "request_id", None))
        except ReloadInProgressError as exc:
            raise HTTPException(
                status_code=409, detail=f"{exc}; poll /v1/admin/reload/{exc.running.id} for its outcome"
            ) from None
        except RuntimeError as exc:
            raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": "2"}) from None
        response.headers["Location"] = f"/v1/admin/reload/{record.id}"
        return record.model_copy(deep=True)

    @router.get(
        "/reload/{reload_id}",
        response_model=ReloadStatus,
        responses={**auth_errors, 404: {"model": ErrorResponse, "description": "No recent reload has this id."}},
    )
    async def read_reload(
        request: Request, reload_id: Annotated[str, Path(max_length=64)]
    ) -> ReloadStatus:
        """Return the status of one of the recent reloads."""
        record = request.app.state.reloader.get(reload_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no recent reload has id {reload_id!r}")
        return record.model_copy(deep=True)

    return router


def install_sighup(reloader: Reloader) -> bool:
    """Make SIGHUP start a reload; return False where that is impossible (no SIGHUP, or not the main thread)."""
    if not hasattr(signal, "SIGHUP"):
        return False

    def on_sighup() -> None:
        try:
            reloader.start("signal")
        except ReloadInProgressError as exc:
            logger.info("SIGHUP ignored: %s", exc)
        except RuntimeError as exc:
            logger.warning("SIGHUP ignored: %s", exc)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
    except (ValueError, RuntimeError) as exc:
        logger.warning("SIGHUP will not reload the index: %s", exc)
        return False
    logger.info("SIGHUP reloads the rules and index (process %d)", os.getpid())
    return True


def remove_sighup() -> None:
    if hasattr(signal, "SIGHUP"):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
