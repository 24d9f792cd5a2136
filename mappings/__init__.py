"""mappings/ as the package gateway._data.mappings (setup.py): the gateway reads it through
importlib.resources (gateway/resources.py). Data only; this file makes it one."""
