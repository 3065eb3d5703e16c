"""dpu-emu: user-space emulator of a DPU storage front end."""
