"""An OpenAI-compatible chat endpoint that charges KNAI Wallet sessions (see app.py)."""
