#!/usr/bin/env bash
# Sets up the Azure identity of the kaito-py GPU provisioner on an AKS cluster, with the az CLI:
#   1. checks the az login and the subscription;
#   2. turns on the cluster's OIDC issuer and workload identity when off (asks first, or --yes);
#   3. creates or reuses a user-assigned managed identity;
#   4. creates or reuses its federated credential for the operator's ServiceAccount;
#   5. creates or reuses (updating its actions when they differ) a custom role limited to the cluster
#      and its agent pools, assigned to the identity on the cluster, and a second one that can only
#      read the status of AKS operations, assigned on the subscription (see step 5 for why);
#   6. prints the helm install command with every value filled in.
# Every step reads first and changes only what is missing or different, so a second run changes nothing.
# --dry-run runs the reads and prints the changes it would make, without making them.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/setup-identity.sh --resource-group RG --cluster-name CLUSTER [options]

required:
  -g, --resource-group RG       resource group of the AKS cluster
  -c, --cluster-name NAME       name of the AKS cluster
options:
  -s, --subscription ID         subscription (default: az's current one)
      --identity-name NAME      managed identity to create or reuse (default: kaito-gpu-provisioner)
      --namespace NS            namespace the chart is installed in (default: kaito-system)
      --service-account NAME    the chart's serviceAccount.name (default: kaito-operator)
      --role-name NAME          cluster-scoped custom role to create or reuse
                                (default: kaito-py GPU provisioner (RG/CLUSTER))
      --operations-role-name NAME
                                subscription-scoped role that reads AKS operation status only
                                (default: kaito-py AKS operation status reader (SUBSCRIPTION_ID))
      --release NAME            helm release name in the printed command (default: kaito)
      --dry-run                 print the changes, make none
      --yes                     do not ask before enabling the OIDC issuer / workload identity
  -h, --help                    this text
EOF
}

RESOURCE_GROUP=""
CLUSTER=""
SUBSCRIPTION=""
IDENTITY_NAME="kaito-gpu-provisioner"
NAMESPACE="kaito-system"
SERVICE_ACCOUNT="kaito-operator"
ROLE_NAME=""
OPERATIONS_ROLE_NAME=""
RELEASE="kaito"
DRY_RUN=false
ASSUME_YES=false

need_value() {
  if [[ $# -lt 2 || -z "$2" ]]; then
    echo "error: $1 needs a value" >&2
    usage >&2
    exit 2
  fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g | --resource-group) need_value "$@"; RESOURCE_GROUP="$2"; shift 2 ;;
    -c | --cluster-name) need_value "$@"; CLUSTER="$2"; shift 2 ;;
    -s | --subscription) need_value "$@"; SUBSCRIPTION="$2"; shift 2 ;;
    --identity-name) need_value "$@"; IDENTITY_NAME="$2"; shift 2 ;;
    --namespace) need_value "$@"; NAMESPACE="$2"; shift 2 ;;
    --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
    --role-name) need_value "$@"; ROLE_NAME="$2"; shift 2 ;;
    --operations-role-name) need_value "$@"; OPERATIONS_ROLE_NAME="$2"; shift 2 ;;
    --release) need_value "$@"; RELEASE="$2"; shift 2 ;;
    --dry-run) DRY_RUN=true; shift ;;
    --yes) ASSUME_YES=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ -z "$RESOURCE_GROUP" || -z "$CLUSTER" ]]; then
  echo "error: --resource-group and --cluster-name are required" >&2
  usage >&2
  exit 2
fi
ROLE_NAME="${ROLE_NAME:-kaito-py GPU provisioner ($RESOURCE_GROUP/$CLUSTER)}"
for role_name in "$ROLE_NAME" "$OPERATIONS_ROLE_NAME"; do
  if [[ "$role_name" == *[\"\\]* ]]; then # they go into a JSON role definition as they are
    echo "error: --role-name and --operations-role-name must not contain a double quote or a backslash: $role_name" >&2
    exit 2
  fi
done
FEDERATED_CREDENTIAL="kaito-${NAMESPACE}-${SERVICE_ACCOUNT}"
SUBJECT="system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"
CHANGES=0
AZ_OUTPUT=""
AZ_ERROR_FILE="$(mktemp)"
trap 'rm -f "$AZ_ERROR_FILE"' EXIT

say() { echo "==> $*"; }

# fields A B...: a JMESPath query printing the fields on one line, '|'-separated, with JSON's true,
# false and null (az's tsv would print one value a line, and Python's True/None inside rows).
fields() {
  local parts=() field
  for field in "$@"; do
    parts+=("to_string($field)")
  done
  local IFS=,
  echo "join('|', [${parts[*]}])"
}

fail_step() { # step, command...; az's error is in AZ_ERROR_FILE
  local step="$1"
  shift
  echo "error: step '$step' failed: az $*" >&2
  sed 's/^/  az: /' "$AZ_ERROR_FILE" >&2
  exit 1
}

# az_read STEP ARGS...: run a read-only az command (also in a dry run); its output is in AZ_OUTPUT.
# Returns az's exit code (3: the resource does not exist) instead of failing, for the caller to judge.
az_read() {
  local step="$1"
  shift
  local code=0
  AZ_OUTPUT="$(az "$@" --only-show-errors 2>"$AZ_ERROR_FILE")" || code=$?
  if [[ $code -ne 0 && $code -ne 3 ]]; then
    fail_step "$step" "$@"
  fi
  return $code
}

# az_change STEP ARGS...: run a command that changes something; in a dry run, print it instead.
az_change() {
  local step="$1"
  shift
  CHANGES=$((CHANGES + 1))
  if $DRY_RUN; then
    printf 'would run: az'
    printf ' %q' "$@"
    printf '\n'
    AZ_OUTPUT=""
    return 0
  fi
  AZ_OUTPUT="$(az "$@" --only-show-errors 2>"$AZ_ERROR_FILE")" || fail_step "$step" "$@"
}

confirm() {
  if $ASSUME_YES || $DRY_RUN; then
    return 0
  fi
  if [[ ! -t 0 ]]; then
    echo "error: $1 Re-run with --yes to allow it (no terminal to ask on)." >&2
    exit 1
  fi
  local answer
  read -r -p "$1 Proceed? [y/N] " answer
  [[ "$answer" == [yY] || "$answer" == [yY][eE][sS] ]]
}

# --- 1. login and subscription ---------------------------------------------------------------------
say "checking the az login"
SUBSCRIPTION_ARGS=()
if [[ -n "$SUBSCRIPTION" ]]; then
  SUBSCRIPTION_ARGS=(--subscription "$SUBSCRIPTION")
fi
if ! az_read "check the az login" account show "${SUBSCRIPTION_ARGS[@]}" --query "$(fields id tenantId name)" -o tsv; then
  fail_step "check the az login (run 'az login' first, and check --subscription)" account show
fi
IFS='|' read -r SUBSCRIPTION_ID TENANT_ID SUBSCRIPTION_NAME <<<"$AZ_OUTPUT"
if [[ -z "${SUBSCRIPTION_ID:-}" ]]; then
  echo "error: step 'check the az login' failed: az account show printed no subscription; run 'az login'" >&2
  exit 1
fi
say "subscription ${SUBSCRIPTION_NAME:-} ($SUBSCRIPTION_ID), tenant $TENANT_ID"
SCOPE_ARGS=(--subscription "$SUBSCRIPTION_ID")

# --- 2. the cluster's OIDC issuer and workload identity ---------------------------------------------
CLUSTER_QUERY="$(fields id location oidcIssuerProfile.enabled securityProfile.workloadIdentity.enabled oidcIssuerProfile.issuerUrl)"
read_cluster() {
  if ! az_read "read the cluster" aks show "${SCOPE_ARGS[@]}" -g "$RESOURCE_GROUP" -n "$CLUSTER" \
    --query "$CLUSTER_QUERY" -o tsv; then
    fail_step "read the cluster (no cluster $CLUSTER in resource group $RESOURCE_GROUP)" aks show -g "$RESOURCE_GROUP" -n "$CLUSTER"
  fi
  IFS='|' read -r CLUSTER_ID LOCATION OIDC_ENABLED WORKLOAD_IDENTITY_ENABLED ISSUER_URL <<<"$AZ_OUTPUT"
}
say "reading cluster $RESOURCE_GROUP/$CLUSTER"
read_cluster
if [[ "$OIDC_ENABLED" != "true" || "$WORKLOAD_IDENTITY_ENABLED" != "true" ]]; then
  if ! confirm "Cluster $CLUSTER has the OIDC issuer (${OIDC_ENABLED:-false}) or workload identity (${WORKLOAD_IDENTITY_ENABLED:-false}) off; enabling them updates the cluster."; then
    echo "error: step 'enable the OIDC issuer and workload identity' refused; the provisioner needs both" >&2
    exit 1
  fi
  say "enabling the OIDC issuer and workload identity on $CLUSTER"
  az_change "enable the OIDC issuer and workload identity" aks update "${SCOPE_ARGS[@]}" -g "$RESOURCE_GROUP" \
    -n "$CLUSTER" --enable-oidc-issuer --enable-workload-identity
  if ! $DRY_RUN; then
    read_cluster
  fi
fi
if [[ -z "${ISSUER_URL:-}" || "$ISSUER_URL" == null ]]; then
  if ! $DRY_RUN; then
    echo "error: step 'read the cluster' failed: cluster $CLUSTER reports no OIDC issuer URL" >&2
    exit 1
  fi
  ISSUER_URL="<the cluster's OIDC issuer URL once enabled>"
fi
say "OIDC issuer: $ISSUER_URL"

# --- 3. the managed identity -------------------------------------------------------------------------
IDENTITY_QUERY="$(fields clientId principalId id)"
if az_read "read the managed identity" identity show "${SCOPE_ARGS[@]}" -g "$RESOURCE_GROUP" -n "$IDENTITY_NAME" \
  --query "$IDENTITY_QUERY" -o tsv; then
  say "reusing managed identity $IDENTITY_NAME"
  IDENTITY_IS_NEW=false
else
  say "creating managed identity $IDENTITY_NAME"
  az_change "create the managed identity" identity create "${SCOPE_ARGS[@]}" -g "$RESOURCE_GROUP" -n "$IDENTITY_NAME" \
    -l "$LOCATION" --query "$IDENTITY_QUERY" -o tsv
  IDENTITY_IS_NEW=true
fi
IFS='|' read -r CLIENT_ID PRINCIPAL_ID IDENTITY_ID <<<"$AZ_OUTPUT"
CLIENT_ID="${CLIENT_ID:-<client id of the new identity>}"
PRINCIPAL_ID="${PRINCIPAL_ID:-<principal id of the new identity>}"
: "${IDENTITY_ID:=}"

# --- 4. the federated credential ---------------------------------------------------------------------
CREDENTIAL_ARGS=(--identity-name "$IDENTITY_NAME" -n "$FEDERATED_CREDENTIAL" --issuer "$ISSUER_URL"
  --subject "$SUBJECT" --audiences api://AzureADTokenExchange)
if [[ -n "$IDENTITY_ID" ]] && az_read "read the federated credential" identity federated-credential show \
  "${SCOPE_ARGS[@]}" -g "$RESOURCE_GROUP" --identity-name "$IDENTITY_NAME" -n "$FEDERATED_CREDENTIAL" \
  --query "$(fields issuer subject)" -o tsv; then
  IFS='|' read -r CURRENT_ISSUER CURRENT_SUBJECT <<<"$AZ_OUTPUT"
  if [[ "$CURRENT_ISSUER" == "$ISSUER_URL" && "$CURRENT_SUBJECT" == "$SUBJECT" ]]; then
    say "reusing federated credential $FEDERATED_CREDENTIAL ($SUBJECT)"
  else
    say "updating federated credential $FEDERATED_CREDENTIAL (was $CURRENT_SUBJECT at $CURRENT_ISSUER)"
    az_change "update the federated credential" identity federated-credential update "${SCOPE_ARGS[@]}" \
      -g "$RESOURCE_GROUP" "${CREDENTIAL_ARGS[@]}"
  fi
else
  say "creating federated credential $FEDERATED_CREDENTIAL for $SUBJECT"
  az_change "create the federated credential" identity federated-credential create "${SCOPE_ARGS[@]}" \
    -g "$RESOURCE_GROUP" "${CREDENTIAL_ARGS[@]}"
fi

# --- 5. least privilege: two custom roles --------------------------------------------------------------
# Not Contributor: on the cluster, Contributor includes
# Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action (cluster-admin
# kubeconfig), and on the resource group it can change every resource. The provisioner only reads
# the cluster and creates, reads and deletes agent pools, so that is all the cluster role allows, and
# it is assigned on the cluster alone.
# The provisioner also polls the operations it started, and AKS serves their status at subscription
# level (/subscriptions/SUB/providers/Microsoft.ContainerService/locations/LOC/operations/ID and, via
# the Location header, .../operationresults/ID): a role assigned on the cluster does not reach those
# paths. So a second role holds only those two reads and is assigned on the subscription; it grants
# no access to any cluster, agent pool or other resource, only the status of AKS operations by id.
RESOURCE_GROUP_SCOPE="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP"
SUBSCRIPTION_SCOPE="/subscriptions/$SUBSCRIPTION_ID"
OPERATIONS_ROLE_NAME="${OPERATIONS_ROLE_NAME:-kaito-py AKS operation status reader ($SUBSCRIPTION_ID)}"

# json_strings A B...: a JSON array of the strings (role names and actions hold no '"' or '\').
json_strings() {
  local joined="" item
  for item in "$@"; do
    joined+="${joined:+,}\"$item\""
  done
  echo "[$joined]"
}

# ensure_role NAME SCOPE DESCRIPTION ACTION...: create the custom role NAME, assignable at SCOPE, or
# reuse it, updating it when its actions differ. Sets ROLE_ID (empty when a dry run would create it)
# and ROLE_IS_NEW (true when created or to be created: it has no assignment yet, and az cannot look
# assignments up by a role it does not know yet).
ensure_role() {
  local name="$1" scope="$2" description="$3"
  shift 3
  local actions definition same
  actions="$(json_strings "$@")"
  definition="{\"Name\": \"$name\", \"IsCustom\": true, \"Description\": \"$description\","
  definition+=" \"Actions\": $actions, \"NotActions\": [], \"DataActions\": [], \"NotDataActions\": [],"
  definition+=" \"AssignableScopes\": [\"$scope\"]}"
  az_read "read the custom role '$name'" role definition list "${SCOPE_ARGS[@]}" --name "$name" \
    --custom-role-only true --scope "$scope" \
    --query "[:1].$(fields id "sort(permissions[0].actions || \`[]\`) == sort(\`$actions\`)")" -o tsv ||
    fail_step "read the custom role '$name'" role definition list --name "$name"
  ROLE_ID="" same=""
  IFS='|' read -r ROLE_ID same <<<"$AZ_OUTPUT"
  ROLE_IS_NEW=false
  if [[ -z "$ROLE_ID" ]]; then
    say "creating custom role '$name'"
    az_change "create the custom role '$name'" role definition create "${SCOPE_ARGS[@]}" \
      --role-definition "$definition" --query id -o tsv
    ROLE_ID="$AZ_OUTPUT"
    ROLE_IS_NEW=true
  elif [[ "$same" != true ]]; then
    say "updating custom role '$name': its actions differ from $actions"
    # Without an "id" in the definition, az finds the role by its name in the assignable scopes.
    az_change "update the custom role '$name'" role definition update "${SCOPE_ARGS[@]}" \
      --role-definition "$definition"
  else
    say "reusing custom role '$name'"
  fi
}

# ensure_assignment NAME SCOPE WHERE: assign the role that ensure_role just saw (ROLE_ID, ROLE_IS_NEW)
# to the identity at SCOPE, unless it already is.
ensure_assignment() {
  local name="$1" scope="$2" where="$3" found=""
  if ! $IDENTITY_IS_NEW && ! $ROLE_IS_NEW; then
    az_read "read the assignment of '$name'" role assignment list "${SCOPE_ARGS[@]}" --assignee "$PRINCIPAL_ID" \
      --role "$ROLE_ID" --scope "$scope" --query "[0].id" -o tsv ||
      fail_step "read the assignment of '$name'" role assignment list --role "$ROLE_ID" --scope "$scope"
    found="$AZ_OUTPUT"
  fi
  if [[ -n "$found" ]]; then
    say "reusing the assignment of '$name' to $IDENTITY_NAME on $where"
    return 0
  fi
  say "assigning '$name' to $IDENTITY_NAME on $where"
  local assign_args=(role assignment create "${SCOPE_ARGS[@]}" --assignee-object-id "$PRINCIPAL_ID"
    --assignee-principal-type ServicePrincipal --role "${ROLE_ID:-<id of the new role>}" --scope "$scope")
  if $DRY_RUN; then
    az_change "assign the custom role '$name'" "${assign_args[@]}"
    return 0
  fi
  # A role or identity made a moment ago can take a while to replicate: retry while az says so
  # (az: "(RoleDefinitionDoesNotExist) The specified role definition with ID '...' does not exist.",
  # "Role '...' doesn't exist.", or PrincipalNotFound).
  local attempt=1
  until AZ_OUTPUT="$(az "${assign_args[@]}" --only-show-errors 2>"$AZ_ERROR_FILE")"; do
    if [[ $attempt -ge 6 ]] ||
      ! grep -qiE "does not exist|doesn't exist|RoleDefinitionDoesNotExist|PrincipalNotFound" "$AZ_ERROR_FILE"; then
      fail_step "assign the custom role '$name'" "${assign_args[@]}"
    fi
    say "the new role or identity has not replicated yet; retrying in ${SETUP_IDENTITY_RETRY_S:-10}s"
    sleep "${SETUP_IDENTITY_RETRY_S:-10}"
    attempt=$((attempt + 1))
  done
  CHANGES=$((CHANGES + 1))
}

ensure_role "$ROLE_NAME" "$RESOURCE_GROUP_SCOPE" \
  "kaito-py GPU provisioner: read the AKS cluster, create, read and delete its agent pools." \
  Microsoft.ContainerService/managedClusters/read \
  Microsoft.ContainerService/managedClusters/agentPools/read \
  Microsoft.ContainerService/managedClusters/agentPools/write \
  Microsoft.ContainerService/managedClusters/agentPools/delete
ensure_assignment "$ROLE_NAME" "$CLUSTER_ID" "the cluster"

ensure_role "$OPERATIONS_ROLE_NAME" "$SUBSCRIPTION_SCOPE" \
  "kaito-py GPU provisioner: read the status of AKS operations (no access to any resource)." \
  Microsoft.ContainerService/locations/operations/read \
  Microsoft.ContainerService/locations/operationresults/read
ensure_assignment "$OPERATIONS_ROLE_NAME" "$SUBSCRIPTION_SCOPE" "the subscription (AKS operation status only)"

# --- 6. what to run next -------------------------------------------------------------------------------
echo
if $DRY_RUN; then
  say "dry run: $CHANGES change(s) would be made; nothing was changed"
elif [[ $CHANGES -eq 0 ]]; then
  say "nothing to change: everything was already set up"
else
  say "done: $CHANGES change(s) made"
fi
cat <<EOF

Install kaito-py with:

  helm install $RELEASE oci://ghcr.io/kaito-py/charts/kaito \\
    --namespace $NAMESPACE --create-namespace \\
    --set serviceAccount.name=$SERVICE_ACCOUNT \\
    --set workloadIdentity.clientId=$CLIENT_ID \\
    --set workloadIdentity.tenantId=$TENANT_ID \\
    --set provisioner.azure.subscriptionId=$SUBSCRIPTION_ID \\
    --set provisioner.azure.resourceGroup=$RESOURCE_GROUP \\
    --set provisioner.azure.clusterName=$CLUSTER \\
    --set provisioner.azure.location=$LOCATION

(or from a checkout: helm install $RELEASE helm/kaito ...). Then: docs/install-aks.md.
EOF
