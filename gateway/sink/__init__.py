"""Reference sinks: the gateway's events written into a database (``gateway sink ...``)."""
