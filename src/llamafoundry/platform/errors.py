"""Errors of the platform's rules (deployments, projects, keys, grants, budgets): a sentence for the user, and the
status and code the management API answers with. The CLI prints the sentence; the API wraps it in the Azure error
envelope."""

from __future__ import annotations


class DeploymentError(Exception):
    """A request about deployments (or projects, keys, budgets) that cannot be honoured; `message` says why and
    what to do."""

    status = 400
    code = "InvalidDeployment"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeploymentNotFound(DeploymentError):
    status = 404
    code = "DeploymentNotFound"


class DeploymentConflict(DeploymentError):
    status = 409
    code = "Conflict"


class ProjectError(DeploymentError):
    code = "InvalidRequest"


class ProjectNotFound(DeploymentError):
    status = 404
    code = "NotFound"


class Forbidden(DeploymentError):
    """The caller is known but may not do this (a project key outside its project, for example)."""

    status = 403
    code = "Forbidden"
