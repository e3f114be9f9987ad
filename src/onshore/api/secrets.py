"""gRPC handlers for secrets: create (named or anonymous), look up, list and delete."""

from __future__ import annotations

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, NotFound
from onshore.models import Secret
from onshore.services.secrets import SecretService


def _metadata(secret: Secret) -> api_pb2.SecretMetadata:
    """What the client shows about a secret: its name, keys and dates, never its values."""
    return api_pb2.SecretMetadata(
        name=secret.name,
        creation_info=api_pb2.CreationInfo(created_at=secret.created_at, created_by="onshore"),
        keys=sorted(secret.env),
        environment_name=secret.environment,
        last_used_at=secret.last_used_at or 0.0,
    )


class SecretHandlers:
    def __init__(self, secrets: SecretService) -> None:
        self._secrets = secrets

    async def SecretGetOrCreate(
        self, req: api_pb2.SecretGetOrCreateRequest, who: Principal
    ) -> api_pb2.SecretGetOrCreateResponse:
        env = req.environment_name or "main"
        kind = req.object_creation_type
        if kind == api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL:
            # A container's ephemeral secret belongs to its app (it lives and goes with it).
            owner = who.task.app_id if who.task is not None else ""
            secret = self._secrets.create_anonymous(owner, dict(req.env_dict), env)
        elif kind == api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP:
            if req.app_id:
                who.require_app(req.app_id)
            secret = self._secrets.create_anonymous(req.app_id, dict(req.env_dict), env)
        elif kind in (
            api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS,
        ):
            who.require_client("create named secrets")
            overwrite = kind == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS
            secret = self._secrets.create_named(req.deployment_name, dict(req.env_dict), env, overwrite)
        elif kind in (
            api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED,
            api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
        ):
            if not req.deployment_name:
                raise InvalidArgument("Secret lookup needs a name")
            if kind == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                try:
                    secret = self._secrets.by_name(req.deployment_name, env, list(req.required_keys))
                except NotFound:
                    who.require_client("create named secrets")
                    secret = self._secrets.create_named(req.deployment_name, dict(req.env_dict), env, False)
            else:
                secret = self._secrets.by_name(req.deployment_name, env, list(req.required_keys))
        else:
            raise InvalidArgument(f"Unsupported secret creation type {kind}")
        return api_pb2.SecretGetOrCreateResponse(secret_id=secret.secret_id, metadata=_metadata(secret))

    async def SecretList(self, req: api_pb2.SecretListRequest, who: Principal) -> api_pb2.SecretListResponse:
        who.require_client("list secrets (a container may look one up by name)")
        env = req.environment_name or "main"
        resp = api_pb2.SecretListResponse(environment_name=env)
        for secret in self._secrets.list(env):
            resp.items.add(
                label=secret.name,
                created_at=secret.created_at,
                last_used_at=secret.last_used_at or 0.0,
                environment_name=secret.environment,
                secret_id=secret.secret_id,
                metadata=_metadata(secret),
            )
        return resp

    async def SecretDelete(self, req: api_pb2.SecretDeleteRequest, who: Principal) -> empty_pb2.Empty:
        who.require_client("delete secrets")
        self._secrets.delete(req.secret_id)
        return empty_pb2.Empty()
