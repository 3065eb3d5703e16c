"""REST control plane (FastAPI) over dpu_emu's services: arrives with the REST issue."""
