"""What the tests share: helpers, not tests (pytest collects nothing here).

- `twin`: both clients behind one awaitable surface (`Twin`), their maker (`Twins`),
  canned answers for respx.
- `statuses`: which HTTP status the client retries and which exception it ends in.
- `rogue`: a loopback server that misbehaves on cue (resets, stalls, bombs).
- `soak`: the chaos soak's engine; `scripts/chaos_soak.py` is its command line.
"""
