"""gRPC handlers for environments and the client's hello."""

from __future__ import annotations

import re

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.api.images import BUILDER_VERSION
from onshore.errors import InvalidArgument, quoted

_ENV_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")


class EnvironmentHandlers:
    async def ClientHello(self, req: empty_pb2.Empty, who: Principal) -> api_pb2.ClientHelloResponse:
        return api_pb2.ClientHelloResponse()

    async def EnvironmentGetOrCreate(
        self, req: api_pb2.EnvironmentGetOrCreateRequest, who: Principal
    ) -> api_pb2.EnvironmentGetOrCreateResponse:
        name = req.deployment_name or "main"
        if not _ENV_RE.match(name):
            raise InvalidArgument(f"Invalid environment name {quoted(name)}")
        resp = api_pb2.EnvironmentGetOrCreateResponse(environment_id=f"en-{name}")
        resp.metadata.name = name
        resp.metadata.settings.image_builder_version = BUILDER_VERSION
        return resp

    async def WorkspaceNameLookup(
        self, req: empty_pb2.Empty, who: Principal
    ) -> api_pb2.WorkspaceNameLookupResponse:
        return api_pb2.WorkspaceNameLookupResponse(workspace_name="onshore", username="onshore")
