"""Would the API server accept the Deployment a custom-template Workspace produces? A server-side dry run.

The webhook asks before it admits the Workspace, and the reconciler asks again before it creates
any Machine, so a pod template the API server refuses costs no GPU node. Only a refusal of the
object itself counts (400/422); any other error is raised for the caller: the reconciler makes
another refusal (403 from a policy engine or an exhausted quota) a condition looked at again later,
and retries the rest with backoff; the webhook admits with a warning.
"""

from __future__ import annotations

from kaito_operator.api.workspace import Workspace
from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import DEPLOYMENT
from kaito_operator.workspace.names import FIELD_MANAGER
from kaito_operator.workspace.validation import FieldError
from kaito_operator.workspace.workload import RenderOptions, render_workload


def refused(error: ApiError) -> bool:
    """The API server refused the object itself (a bad user template): retrying cannot help."""
    return error.status in (400, 422) and error.reason in ("Invalid", "BadRequest")


async def dry_run_workload(client: KubeClient, workspace: Workspace, options: RenderOptions) -> FieldError | None:
    """None when the workload would be accepted; the reason, on ``inference.template``, when not."""
    desired = render_workload(workspace, options)
    # The owner may not exist yet (admission of a create); it has no bearing on the pod spec.
    desired["metadata"].pop("ownerReferences", None)
    try:
        await client.apply(DEPLOYMENT, desired, field_manager=FIELD_MANAGER, dry_run=True)
    except ApiError as error:
        if refused(error):
            return FieldError(
                "inference.template", f"the Deployment made from this template is refused: {error.api_message}"
            )
        raise
    return None
