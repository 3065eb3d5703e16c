"""The completion status of a command sent before the queue authenticated."""

from __future__ import annotations

from ..errors import NvmeStatus
from ..wire.constants import CommandSpecificStatus, StatusCodeType


class AuthenticationRequired(NvmeStatus):
    """Fabrics status 91h (SCT 1): the queue must authenticate first (Linux: NVME_SC_AUTH_REQUIRED | DNR)."""

    sct = StatusCodeType.COMMAND_SPECIFIC
    sc = CommandSpecificStatus.AUTHENTICATION_REQUIRED
    dnr = True
