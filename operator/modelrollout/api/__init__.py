"""The ModelDeployment API: pydantic models for spec and status, and the CRD generated from them."""

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("mdep",)
