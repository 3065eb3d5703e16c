"""NVMe in-band authentication, DH-HMAC-CHAP (TP 8006), sans-IO.

``secret`` parses DHHC-1 secrets, ``crypto`` holds the RFC 7919 groups and the response
constructions, ``messages`` the wire layouts, ``controller_side`` / ``host_side`` the two
state machines.
"""

from .constants import AUTHREQ_ATR, DhGroupId, HashId, dhgroup_by_name, hash_by_name
from .controller_side import ControllerAuth
from .host_side import AuthenticationFailed, AuthRejected, HostAuth
from .policy import AuthPolicy
from .secret import DhchapKey, SecretError, validate_secret

__all__ = [
    "AUTHREQ_ATR", "AuthPolicy", "AuthRejected", "AuthenticationFailed", "ControllerAuth", "DhGroupId",
    "DhchapKey", "HashId", "HostAuth", "SecretError", "dhgroup_by_name", "hash_by_name", "validate_secret",
]
