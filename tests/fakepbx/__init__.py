"""A minimal TEST-ONLY vendor plugin (``fakepbx``), registered as a third party would ship one:
through an entry point of its own distribution (see ``tests/conftest.py``), never named by
``gateway/``. It proves the plugin seam: push link + poller, commands, webhook routes, simulator.
"""
