"""The one message every sandbox entry point gives when the ``sandbox`` extra is missing.

Kept free of starlette and uvicorn imports itself, so the package, the pytest
plugin and the CLI can all reach it without the extra installed.
"""

from __future__ import annotations

__all__ = ["EXTRA_MODULES", "INSTALL_HINT", "missing_extra"]

EXTRA_MODULES = ("starlette", "uvicorn")
INSTALL_HINT = 'pip install "knai-provider[sandbox]"'


def missing_extra(what: str, exc: ModuleNotFoundError) -> ModuleNotFoundError | None:
    """A clearer ``ModuleNotFoundError`` when ``exc`` is starlette or uvicorn missing.

    Args:
        what: What needed the extra (``knai.testing.Sandbox``, a fixture's name).
        exc: The error the import raised.

    Returns:
        An error naming the extra and the command that installs it, or None when
        ``exc`` is about some other module (so the caller re-raises it as is).
    """
    top = (exc.name or "").partition(".")[0]
    if top not in EXTRA_MODULES:
        return None
    return ModuleNotFoundError(
        f"{what} needs the sandbox extra ({top} is not installed): {INSTALL_HINT}", name=exc.name
    )
