"""Errors shared by the command-line entry points and tools."""

from __future__ import annotations


class CommandError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""
