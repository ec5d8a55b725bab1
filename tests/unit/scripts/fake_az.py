"""A fake ``az`` for testing scripts/setup-identity.sh: the subcommands the script uses, over a state
kept in a JSON file (FAKE_AZ_STATE), each call appended to a JSON-lines file (FAKE_AZ_CALLS).

It behaves as the real CLI does where the script depends on it: ``--query`` is JMESPath (the same
library az uses), ``-o tsv`` prints a top-level list one value a line and a string as is, a ``show``
of a missing resource exits 3 with ``(ResourceNotFound)``, and a missing login exits 1 with
"Please run 'az login' to setup account.".
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import jmespath


class AzError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def options(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional words and ``--option value`` pairs (flags get "true")."""
    words: list[str] = []
    values: dict[str, str] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("-"):
            name = arg.lstrip("-")
            if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                values[name] = argv[index + 1]
                index += 2
                continue
            values[name] = "true"
        else:
            words.append(arg)
        index += 1
    return words, values


def tsv(result: Any) -> str:
    rows = result if isinstance(result, list) else [result]
    lines = []
    for row in rows:
        if isinstance(row, dict):
            lines.append("\t".join("" if isinstance(v, dict) else str(v) for _, v in sorted(row.items())))
        elif isinstance(row, bool):
            lines.append(str(row).lower())
        else:
            lines.append(str(row))
    return "".join(line + "\n" for line in lines)


def not_found(kind: str, name: str) -> AzError:
    return AzError(f"(ResourceNotFound) The Resource '{kind}/{name}' was not found.", code=3)


def run(state: dict[str, Any], argv: list[str]) -> Any:
    words, opt = options(argv)
    command = " ".join(words)
    account = state.get("account")
    if account is None:
        raise AzError("Please run 'az login' to setup account.")
    subscription = opt.get("subscription", account["id"])
    if subscription != account["id"]:
        raise AzError(f"Subscription '{subscription}' not found. Check the spelling and casing and try again.")
    group = opt.get("g") or opt.get("resource-group") or ""
    name = opt.get("n") or opt.get("name") or ""
    rg_id = f"/subscriptions/{account['id']}/resourceGroups/{group}"
    if command == "account show":
        return account
    if command.startswith("aks"):
        cluster = state["clusters"].get(f"{group}/{name}")
        if cluster is None:
            raise not_found("Microsoft.ContainerService/managedClusters", name)
        if command == "aks show":
            return cluster
        if command == "aks update":
            if opt.get("enable-oidc-issuer") == "true":
                cluster["oidcIssuerProfile"] = {
                    "enabled": True,
                    "issuerUrl": f"https://{cluster['location']}.oic.prod-aks.azure.com/{account['tenantId']}/x/",
                }
            if opt.get("enable-workload-identity") == "true":
                cluster["securityProfile"] = {"workloadIdentity": {"enabled": True}}
            return cluster
    identities = state.setdefault("identities", {})
    if command == "identity show":
        if f"{group}/{name}" not in identities:
            raise not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name)
        return identities[f"{group}/{name}"]
    if command == "identity create":
        identity = {
            "name": name,
            "location": opt["l"],
            "clientId": str(uuid.uuid4()),
            "principalId": str(uuid.uuid4()),
            "tenantId": account["tenantId"],
            "id": f"{rg_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        }
        identities[f"{group}/{name}"] = identity
        return identity
    if command.startswith("identity federated-credential"):
        if f"{group}/{opt['identity-name']}" not in identities:
            raise not_found("Microsoft.ManagedIdentity/userAssignedIdentities", opt["identity-name"])
        credentials = state.setdefault("federated_credentials", {})
        key = f"{group}/{opt['identity-name']}/{name}"
        if command.endswith(" show"):
            if key not in credentials:
                raise not_found("federatedIdentityCredentials", name)
            return credentials[key]
        credential = {"name": name, "issuer": opt["issuer"], "subject": opt["subject"], "audiences": [opt["audiences"]]}
        credentials[key] = credential
        return credential
    roles = state.setdefault("role_definitions", [])
    if command == "role definition list":
        return [r for r in roles if r["roleName"] == opt.get("name") and opt.get("scope") in r["assignableScopes"]]
    if command == "role definition create":
        definition = json.loads(opt["role-definition"])
        role = {
            "roleName": definition["Name"],
            "assignableScopes": definition["AssignableScopes"],
            "permissions": [{"actions": definition["Actions"]}],
            "id": f"/subscriptions/{account['id']}/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}",
        }
        roles.append(role)
        return role
    assignments = state.setdefault("role_assignments", [])
    if command == "role assignment list":
        return [
            a
            for a in assignments
            if a["principalId"] == opt.get("assignee")
            and a["roleDefinitionName"] == opt.get("role")
            and a["scope"] == opt.get("scope")
        ]
    if command == "role assignment create":
        if not any(r["roleName"] == opt["role"] for r in roles):
            raise AzError(f"Role '{opt['role']}' doesn't exist.")
        assignment = {
            "principalId": opt["assignee-object-id"],
            "roleDefinitionName": opt["role"],
            "scope": opt["scope"],
            "id": f"{opt['scope']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        }
        assignments.append(assignment)
        return assignment
    raise AzError(f"'{command}' is not in the fake az", code=2)


def main(argv: list[str]) -> int:
    state_file = Path(os.environ["FAKE_AZ_STATE"])
    with Path(os.environ["FAKE_AZ_CALLS"]).open("a") as calls:
        calls.write(json.dumps(argv) + "\n")
    state = json.loads(state_file.read_text())
    try:
        result = run(state, argv)
    except AzError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return error.code
    words, opt = options(argv)
    if {"create", "update"} & set(words):  # reads never write the state
        state_file.write_text(json.dumps(state))
    if "query" in opt:
        result = jmespath.search(opt["query"], result)
    if result is None:
        return 0
    if opt.get("o") == "tsv":
        sys.stdout.write(tsv(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
