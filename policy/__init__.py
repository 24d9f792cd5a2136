"""policy/ as the package gateway._data.policy (setup.py): the gateway reads it through
importlib.resources (gateway/resources.py). Data only; this file makes it one."""
