"""GET /_onshore/resources: what the server's nodes have and hold, for `onshore status` (API token auth)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from onshore.errors import Unauthenticated
from onshore.services.overview import OverviewService
from onshore.services.tokens import TokenService

TOKEN_ID_HEADER = "x-modal-token-id"
TOKEN_SECRET_HEADER = "x-modal-token-secret"


def status_routes(overview: OverviewService, tokens: TokenService) -> list[Route]:
    async def resources(request: Request) -> Response:
        try:
            tokens.verify(
                request.headers.get(TOKEN_ID_HEADER, ""), request.headers.get(TOKEN_SECRET_HEADER, "")
            )
        except Unauthenticated:
            return JSONResponse({"error": "an API token is needed (x-modal-token-id/-secret)"}, 401)
        return JSONResponse({"nodes": overview.resources()})

    return [Route("/_onshore/resources", resources, methods=["GET"])]
