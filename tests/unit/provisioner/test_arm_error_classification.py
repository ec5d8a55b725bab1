"""ARM errors become failure kinds by status and code, in one place (gpu_provisioner.aks.classify)."""

from __future__ import annotations

import pytest

from gpu_provisioner import errors
from gpu_provisioner.aks import classify

SKU_MESSAGE = "The VM size of Standard_NC96ads_A100_v4 is not allowed in your subscription in location 'eastus'."


@pytest.mark.parametrize(
    ("status", "code", "message", "kind"),
    [
        (404, "NotFound", "Agent Pool not found", errors.NotFound),
        (
            409,
            "OperationNotAllowed",
            "Operation is not allowed because there's an in progress create node pool operation",
            errors.OperationInProgress,
        ),
        (400, "QuotaExceeded", "exceeding approved standardNCSv3Family Cores quota", errors.QuotaExceeded),
        (400, "ErrCode_InsufficientVCPUQuota", "not enough vCPU quota", errors.QuotaExceeded),
        (400, "BadRequest", SKU_MESSAGE, errors.SkuNotAllowed),
        (400, "SkuNotAvailable", "The requested size is currently not available", errors.SkuNotAllowed),
        (400, "InvalidParameter", "Agent Pool name 'Bad-Name' is invalid.", errors.InvalidParameters),
        (400, "BadRequest", "something else is wrong with the request", errors.InvalidParameters),
        (400, "PropertyChangeNotAllowed", "Changing property 'vmSize' is not allowed.", errors.InvalidParameters),
        (429, "TooManyRequests", "throttled", errors.Transient),
        (500, "InternalServerError", "oops", errors.Transient),
        (503, None, "unavailable", errors.Transient),
        (409, "Conflict", "some other conflict", errors.Transient),
        (401, "InvalidAuthenticationToken", "The access token is invalid.", errors.Unauthorized),
        (403, "AuthorizationFailed", "does not have authorization", errors.Unauthorized),
    ],
)
def test_arm_answers_are_classified_by_status_and_code(
    status: int, code: str | None, message: str, kind: type[errors.CloudError]
) -> None:
    error = classify(status=status, code=code, message=message)
    assert type(error) is kind
    assert error.code == code
    assert error.message == message


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AllocationFailed", errors.InsufficientCapacity),
        ("ZonalAllocationFailed", errors.InsufficientCapacity),
        ("OverconstrainedAllocationRequest", errors.InsufficientCapacity),
        ("QuotaExceeded", errors.QuotaExceeded),
        ("OperationNotAllowed", errors.OperationFailed),  # a failed operation is not "in progress"
        ("VMExtensionProvisioningError", errors.OperationFailed),
    ],
)
def test_failed_long_running_operations_are_classified_by_their_error_code(
    code: str, kind: type[errors.CloudError]
) -> None:
    assert type(classify(status=200, code=code, message="m", operation_failed=True)) is kind


def test_permanence_follows_the_kind() -> None:
    permanent = {errors.QuotaExceeded, errors.SkuNotAllowed, errors.InvalidParameters, errors.InsufficientCapacity}
    retried = {
        errors.Transient,
        errors.OperationInProgress,
        errors.NotFound,
        errors.OperationFailed,
        errors.Unauthorized,
    }
    assert all(kind.permanent for kind in permanent)
    assert not any(kind.permanent for kind in retried)


def test_retry_after_is_carried() -> None:
    error = classify(status=429, code="TooManyRequests", message="slow down", retry_after=7)
    assert error.retry_after == 7


def test_the_sku_sentence_only_counts_for_a_generic_bad_request() -> None:
    # A specific code wins over the documented sentence; the sentence is only a fallback.
    assert type(classify(status=400, code="QuotaExceeded", message=SKU_MESSAGE)) is errors.QuotaExceeded


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ResourceGroupNotFound", "Resource group 'wrong-rg' could not be found."),
        ("SubscriptionNotFound", "The subscription 'x' could not be found."),
        (
            "ResourceNotFound",
            "The Resource 'Microsoft.ContainerService/managedClusters/c' under resource group 'rg' was not found.",
        ),
        (
            "ParentResourceNotFound",
            "Can not perform requested operation on nested resource. Parent resource 'c' not found.",
        ),
        ("InvalidResourceType", "No route for GET /somewhere"),  # an unplaceable 404 is not "gone" either
        (None, "Not Found"),
    ],
)
def test_a_404_above_the_pool_is_a_configuration_error_never_not_found(code: str | None, message: str) -> None:
    error = classify(status=404, code=code, message=message)
    assert type(error) is errors.ConfigurationError
    assert message in error.message and "check " in error.message


def test_only_aks_own_not_found_means_the_pool_is_gone() -> None:
    assert type(classify(status=404, code=None, message="Agent Pool not found: nodepool1")) is errors.NotFound


def test_a_refused_identity_is_a_configuration_error_too() -> None:
    assert isinstance(classify(status=403, code="AuthorizationFailed", message="m"), errors.ConfigurationError)
