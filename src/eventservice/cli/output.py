"""Rich consoles for the commands, made on first use.

Building them (and importing rich) costs about a tenth of a second, which every pilot
and payload process would pay at start-up for nothing: those commands never print
through rich.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    """The console on stdout."""
    from rich.console import Console

    return Console(soft_wrap=True)


@cache
def err_console() -> Console:
    """The console on stderr."""
    from rich.console import Console

    return Console(stderr=True)
