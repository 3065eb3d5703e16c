"""Errors of the domain services.  Each says what went wrong in terms of the model; the
REST adapter maps each class to one HTTP status (one table, in control_api.errors)."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a request the device refuses.  ``str(err)`` is safe to show a client."""

    title = "request refused"


class InvalidArgument(DomainError):
    """A value breaks an invariant (NQN syntax, NSID range, size not a block multiple...)."""

    title = "invalid argument"


class NotFound(DomainError):
    """No such resource, or one the caller may not see (the two are indistinguishable)."""

    title = "not found"


class AlreadyExists(DomainError):
    """A resource with that identity exists already (NQN, NSID, listener address, name)."""

    title = "already exists"


class Conflict(DomainError):
    """The request contradicts the current state (port in use, NSID above the limit...)."""

    title = "conflict"


class Forbidden(DomainError):
    """The caller's scope does not include this operation (a tenant on an admin route)."""

    title = "forbidden"


class PersistError(DomainError):
    """The change is live but could not be written to the configuration file."""

    title = "configuration not saved"


class Unavailable(DomainError):
    """The device lacks what the request needs (e.g. key management is not configured)."""

    title = "not available"
