"""What an operator watches: Prometheus metrics (`metrics.py`, served by `exposition.py`), one structured log
line per request with its request id (`requests.py`, formatted by `logs.py`). Nothing here carries patient
data, ids or query strings (docs/operations.md)."""
