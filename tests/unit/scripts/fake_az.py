"""A fake ``az`` for testing scripts/setup-identity.sh: the subcommands the script uses, over a state
kept in a JSON file (FAKE_AZ_STATE), each call appended to a JSON-lines file (FAKE_AZ_CALLS).

It behaves as the real CLI does where the script depends on it: ``--query`` is JMESPath (the same
library az uses), ``-o tsv`` prints a top-level list one value a line and a string as is, a ``show``
of a missing resource exits 3 with ``(ResourceNotFound)``, ``--role NAME`` of a role that does not
exist fails with "Role 'NAME' doesn't exist.", and a missing login exits 1 with
"Please run 'az login' to setup account.". ``replication_lag`` in the state makes that many
``role assignment create`` calls fail as a role not yet replicated does (RoleDefinitionDoesNotExist).
"""

from __future__ import annotations

import json
import os
import re
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


def camel_case(definition: dict[str, Any]) -> dict[str, Any]:
    """az accepts a role definition's keys capitalised (``AssignableScopes``) and lowers the first letter."""
    return {key[:1].lower() + key[1:]: value for key, value in definition.items()}


def set_permissions(role: dict[str, Any], definition: dict[str, Any]) -> None:
    role["description"] = definition.get("description")
    role["assignableScopes"] = definition["assignableScopes"]
    role["permissions"] = [
        {
            "actions": definition.get("actions", []),
            "notActions": definition.get("notActions", []),
            "dataActions": definition.get("dataActions", []),
            "notDataActions": definition.get("notDataActions", []),
        }
    ]


def resolve_role_id(roles: list[dict[str, Any]], role: str, subscription: str) -> str:
    """As az does for ``--role``: a role definition id or GUID is taken as is, a name is looked up."""
    if re.match(r"/subscriptions/.+/providers/Microsoft.Authorization/roleDefinitions/", role, re.IGNORECASE):
        return role
    try:
        return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{uuid.UUID(role)}"
    except ValueError:
        pass
    matched: list[str] = [r["id"] for r in roles if r["roleName"] == role]
    if not matched:
        raise AzError(f"Role '{role}' doesn't exist.")
    return matched[0]


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
        return [
            r
            for r in roles
            if opt.get("name") in (r["roleName"], r["name"]) and opt.get("scope") in r["assignableScopes"]
        ]
    if command == "role definition create":
        definition = camel_case(json.loads(opt["role-definition"]))
        guid = str(uuid.uuid4())
        role = {
            "name": guid,
            "roleName": definition["name"],
            "roleType": "CustomRole",
            "id": f"/subscriptions/{account['id']}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        }
        set_permissions(role, definition)
        roles.append(role)
        return role
    if command == "role definition update":
        # Without an "id", az looks the role up by its name in the definition's assignable scopes.
        definition = camel_case(json.loads(opt["role-definition"]))
        scopes = definition.get("assignableScopes") or [f"/subscriptions/{account['id']}"]
        matched = [
            r
            for r in roles
            if definition["name"] in (r["roleName"], r["name"]) and set(scopes) & set(r["assignableScopes"])
        ]
        if not matched:
            raise AzError(f'No definition was found with the name of "{definition["name"]}"')
        set_permissions(matched[0], definition)
        return matched[0]
    assignments = state.setdefault("role_assignments", [])
    if command == "role assignment list":
        # az resolves --role before filtering whenever any assignment applies at or above the scope,
        # which in a real subscription is always (its owner's): an unknown role name is an error.
        role_id = resolve_role_id(roles, opt["role"], account["id"]) if "role" in opt else None
        return [
            a
            for a in assignments
            if a["principalId"] == opt.get("assignee")
            and role_id in (None, a["roleDefinitionId"])
            and a["scope"] == opt.get("scope")
        ]
    if command == "role assignment create":
        role_id = resolve_role_id(roles, opt["role"], account["id"])
        assigned: dict[str, Any] | None = next((r for r in roles if r["id"] == role_id), None)
        lagging = state.get("replication_lag", 0)
        if assigned is None or lagging:
            state["replication_lag"] = max(lagging - 1, 0)
            raise AzError(
                f"(RoleDefinitionDoesNotExist) The specified role definition with ID '{role_id.rsplit('/', 1)[-1]}' "
                "does not exist."
            )
        assignment = {
            "principalId": opt["assignee-object-id"],
            "principalType": opt.get("assignee-principal-type"),
            "roleDefinitionId": role_id,
            "roleDefinitionName": assigned["roleName"],
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
    words, opt = options(argv)
    try:
        result = run(state, argv)
    except AzError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return error.code
    finally:
        if {"create", "update"} & set(words):  # reads never write the state; a failed create only its lag
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
