"""The error of malformed wire data, shared by the frames and the scopes they carry."""

from __future__ import annotations

__all__ = ["FrameError"]


class FrameError(ValueError):
    """A frame that is not version 1 of this protocol, or is malformed."""
