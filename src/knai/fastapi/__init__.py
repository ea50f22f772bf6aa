"""Serve a paid endpoint with FastAPI: a dependency that hands each handler the caller's `Wallet`.

Needs the ``fastapi`` extra (``pip install "knai-provider[fastapi]"``); `import
knai` does not load it::

    from typing import Annotated

    from fastapi import Depends, FastAPI, Header

    from knai import AsyncKNAIProvider
    from knai.fastapi import Paywall, Wallet
    from knai.sessions import AsyncSessionCache

    def username_of(x_user: Annotated[str, Header()]) -> str:  # your own authentication
        return x_user

    paywall = Paywall(AsyncSessionCache(AsyncKNAIProvider()), username_of)
    app = FastAPI()

    @app.post("/work")
    async def work(wallet: Annotated[Wallet, Depends(paywall)]) -> dict[str, int]:
        await wallet.charge(100, "my-model")
        return {"charged": wallet.charged}

Answers the dependency gives for you, as JSON ``{"detail": {"reason": ...}}``:
402 ``no_active_session`` (with the ``provider_username`` and a ``hint``) and
``insufficient_balance``, 403 ``session_expired``, 503 ``wallet_unavailable``.
No session token or API key ever appears in them or in a log line.
"""

from ._paywall import Paywall
from ._wallet import PaymentRefused, Wallet, sse_event

__all__ = ["PaymentRefused", "Paywall", "Wallet", "sse_event"]
