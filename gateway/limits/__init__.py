"""Bounded requests (docs/operations.md, "Limits"): how deep JSON may nest, how large a resource and a
response may be, which numbers may reach SQL, and how long a request's statements may run. Each limit is
a setting (gateway/config.py); a request past one is answered 4xx (a statement past its time 503) with an
OperationOutcome naming the limit and its setting."""
