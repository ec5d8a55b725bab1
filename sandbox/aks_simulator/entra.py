"""The simulated Entra ID token endpoint (``POST /{tenant}/oauth2/v2.0/token``) for workload identity.

It accepts exactly what azure-identity's WorkloadIdentityCredential sends for the configured
application (client credentials with a federated client assertion for the ARM scope) and refuses
everything else with AAD's error shape and AADSTS codes, so a misconfigured operator sees the same
words it would see in Azure.
"""

from __future__ import annotations

import datetime
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.aks_simulator.config import SimulatorConfig

ARM_SCOPE = "https://management.azure.com/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class IssuedToken:
    client_id: str
    expires_at: float


class TokenRefused(Exception):
    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(f"{error}: AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def body(self) -> dict[str, Any]:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        timestamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}",
            "error_codes": [self.aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }


class TokenIssuer:
    """Checks token requests and remembers the opaque bearer tokens it handed out."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._tokens: dict[str, IssuedToken] = {}

    def issue(self, tenant: str, form: Mapping[str, str]) -> dict[str, Any]:
        cfg = self._config
        if tenant.lower() != cfg.tenant_id.lower():
            raise TokenRefused(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            raise TokenRefused(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type')}'.",
            )
        client_id = form.get("client_id", "")
        if client_id.lower() != cfg.client_id.lower():
            raise TokenRefused(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                "This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You may have sent your authentication "
                "request to the wrong tenant.",
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            raise TokenRefused(
                400,
                "invalid_request",
                700021,
                f"Client assertion type is invalid: '{form.get('client_assertion_type')}'.",
            )
        if form.get("client_assertion") != cfg.federated_token:
            raise TokenRefused(
                401,
                "invalid_client",
                700213,
                "No matching federated identity record found for presented assertion subject. Check "
                "your federated identity credential Subject, Audience and Issuer against the presented "
                "assertion.",
            )
        scopes = (form.get("scope") or "").split()
        if scopes != [ARM_SCOPE]:
            raise TokenRefused(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid: '{form.get('scope')}'. "
                f"This application may only request '{ARM_SCOPE}'.",
            )
        token = "sim-" + secrets.token_urlsafe(32)
        self._tokens[token] = IssuedToken(client_id=client_id, expires_at=time.time() + cfg.token_lifetime_s)
        return {
            "token_type": "Bearer",
            "expires_in": cfg.token_lifetime_s,
            "ext_expires_in": cfg.token_lifetime_s,
            "access_token": token,
        }

    def check(self, authorization: str | None) -> str | None:
        """None when the Authorization header carries a live token we issued, else why not."""
        if not authorization:
            return "The authentication failed because of missing 'Authorization' header."
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "The 'Authorization' header is not a bearer token."
        issued = self._tokens.get(token.strip())
        if issued is None:
            return "The access token is invalid."
        if issued.expires_at < time.time():
            return "The access token has expired."
        return None
