"""Who may call a served model: its deployment keys, its project's keys and, for managed compute, Entra ID tokens
that one of its project's grants admits (`AuthPolicy`); and who a request comes from (`Caller`).

The gateway builds one policy per deployment from the store (`load_access` reads the project keys and grants in
the same poll that reads the deployments), so a key created or revoked, or a grant changed, takes effect within
two seconds without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from llamafoundry.platform.keys import DEFAULT_KEY_ID, StoredKey, match_key
from llamafoundry.platform.project_keys import ProjectKey, active_keys, match_project_key
from llamafoundry.platform.projects import Grant, list_grants
from llamafoundry.platform.ratelimit import RateLimits
from llamafoundry.platform.store import Store
from llamafoundry.platform.tokens import TokenError, TokenVerifier, looks_like_jwt

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a key (by id, never the key) or a token's subject; the project it acts in (None
    for the server's own model), and a project key's own limits."""

    auth: str  # "key" or "token"
    key_id: str | None = None
    subject: str | None = None
    project: str | None = None
    limits: RateLimits | None = None
    is_project_key: bool = False


@dataclass
class AuthPolicy:
    """Keys (hashed), project keys and, for managed compute, bearer tokens admitted by a grant.

    Args:
        keys: the deployment's own keys (or the server's `--api-key` for its own model).
        verifier: checks tokens' signature and claims; None refuses every token.
        accepts_tokens: managed compute only (serverless deployments take keys, as on Azure).
        project_keys: the project's active keys that open this deployment.
        grants: the project's grants (which tokens open its deployments).
        deployment: the deployment's name (grants may name some deployments only).
        project: the deployment's project.
    """

    keys: list[StoredKey]
    verifier: TokenVerifier | None = None
    accepts_tokens: bool = False
    project_keys: list[ProjectKey] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    deployment: str | None = None
    project: str | None = None

    async def authorize(self, credentials: Iterable[str]) -> Caller | None:
        """The caller, or None when no credential is accepted (answer 401).

        Serverless deployments never accept a token: a JWT is just a wrong key to them.
        """
        credentials = [c for c in credentials if c]
        key = match_key(credentials, self.keys)
        if key is not None:
            key_id = DEFAULT_KEY_ID if key.slot == DEFAULT_KEY_ID else key.key_id
            return Caller("key", key_id=key_id, project=self.project)
        project_key = match_project_key(credentials, self.project_keys, time.time())
        if project_key is not None:
            return Caller("key", key_id=project_key.id, project=project_key.project, limits=project_key.limits,
                          is_project_key=True)  # fmt: skip
        if not self.accepts_tokens or self.verifier is None:
            return None
        for credential in credentials:
            if looks_like_jwt(credential):
                caller = await self._token_caller(credential)
                if caller is not None:
                    return caller
        return None

    async def _token_caller(self, token: str) -> Caller | None:
        assert self.verifier is not None
        try:
            claims = await asyncio.to_thread(self.verifier.verify, token)
        except TokenError as exc:
            logger.info("bearer token refused: %s", exc)
            return None
        subject = claims.object_id or claims.subject
        if not any(grant.matches(claims.claims, self.deployment or "") for grant in self.grants):
            logger.info("bearer token of subject %s refused: project %s grants it no access to deployment %s "
                        "(`llamafoundry project grant`)", subject, self.project, self.deployment)  # fmt: skip
            return None
        return Caller("token", subject=subject, project=self.project)


@dataclass(frozen=True)
class Access:
    """The project keys and grants of every project, as one poll read them."""

    keys: dict[str, list[ProjectKey]] = field(default_factory=dict)
    grants: dict[str, list[Grant]] = field(default_factory=dict)

    def keys_for(self, project: str, deployment: str) -> list[ProjectKey]:
        return [key for key in self.keys.get(project, []) if key.opens(deployment)]


def load_access(store: Store) -> Access:
    keys: dict[str, list[ProjectKey]] = {}
    for key in active_keys(store):
        keys.setdefault(key.project, []).append(key)
    grants: dict[str, list[Grant]] = {}
    for grant in list_grants(store):
        grants.setdefault(grant.project, []).append(grant)
    return Access(keys, grants)
