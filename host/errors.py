"""Errors raised beside the accelerator.

Every message is one line: what is wrong, then what to do about it.
Standard library only, so the module imports on the board image.
"""


class HostError(Exception):
    """Base class of every error raised by the host package."""


class IOSpecError(HostError):
    """Data or an IO description does not match the accelerator's IO spec
    (shape, datatype, value range, a missing or unknown key)."""


class BitfileError(HostError):
    """The bitfile or its .hwh is missing, or describes no FINN IO DMAs."""


class DmaTimeoutError(HostError):
    """A DMA engine did not finish (or was not idle) within the timeout."""


class DeployVersionError(HostError):
    """The deployed files were built by a different version than the host code."""
