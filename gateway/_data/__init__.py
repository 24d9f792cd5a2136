"""The run-time data the wheel carries: gateway._data.mappings, .profiles and .policy are the
repository's top-level mappings/, profiles/ and policy/ (setup.py maps them); read them through
gateway/resources.py."""
