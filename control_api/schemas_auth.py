"""DH-HMAC-CHAP schemas: secrets go in (write-only), only settings come out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SECRET_MAX = 200  # DHHC-1:hh: + base64 of 68 bytes + ':' is 102 characters
HASHES = ("sha256", "sha384", "sha512")
DHGROUPS = ("null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
Secret = Field(None, min_length=1, max_length=SECRET_MAX, pattern=r"^DHHC-1:",
               description="DHHC-1 secret (`nvme gen-dhchap-key`); write-only, never returned")
Hashes = Field(None, min_length=1, max_length=len(HASHES), description=f"allowed hashes, preferred first: {HASHES}")
Groups = Field(None, min_length=1, max_length=len(DHGROUPS),
               description=f"allowed DH groups, preferred first: {DHGROUPS}")


class DhchapFields(BaseModel):
    """Optional DH-HMAC-CHAP settings of a host entry (a host key makes authentication required)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    dhchap_key: str | None = Secret
    dhchap_ctrl_key: str | None = Field(None, min_length=1, max_length=SECRET_MAX, pattern=r"^DHHC-1:",
                                        description="controller secret for bidirectional authentication; "
                                                    "write-only")
    dhchap_hashes: list[str] | None = Hashes
    dhchap_dhgroups: list[str] | None = Groups


class DhchapSet(DhchapFields):
    """PUT: set or rotate (the host key is required; absent settings take their defaults)."""

    dhchap_key: str = Field(..., min_length=1, max_length=SECRET_MAX, pattern=r"^DHHC-1:",  # type: ignore[assignment]
                            description="DHHC-1 host secret; write-only")


class DhchapPatch(DhchapFields):
    """PATCH: change some settings; ``dhchap_ctrl_key: null`` turns bidirectional off."""


class DhchapPublic(BaseModel):
    enabled: bool
    bidirectional: bool
    hashes: list[str]
    dhgroups: list[str]
