"""REST control plane (FastAPI) over dpu_emu's domain services.

``create_app(device, admin_digest=...)`` builds the app; :class:`RestFrontend` serves it
inside ``dpu-emu serve`` (entry point ``dpu_emu.frontends: rest``).
"""

from .app import create_app
from .frontend import RestFrontend

__all__ = ["RestFrontend", "create_app"]
