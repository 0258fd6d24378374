"""Help text shared by the commands that take a phone model and firmware."""

from __future__ import annotations

from phone_sim.firmware import DEFAULT_MODEL, FIRMWARE_TABLE, Model, newest_firmware

__all__ = ["firmware_help", "model_help"]


def model_help() -> str:
    """``--model``'s help: every model."""
    return (f"phone model: {', '.join(m.value for m in Model)} "
            f"(default {DEFAULT_MODEL.value})")


def firmware_help() -> str:
    """``--firmware``'s help: the versions known, and what else is taken."""
    known = "; ".join(f"{family}: {', '.join(str(v) for v in versions)}"
                      for family, versions in FIRMWARE_TABLE.items())
    return (f"firmware version; known ones ({known}); any other version on the model's "
            f"firmware line is taken too (default the newest known: "
            f"{newest_firmware(DEFAULT_MODEL)}, {newest_firmware(Model.D80)} on a D80)")
