"""Test beds for dpu-emu (environments that exercise it from the outside)."""
