"""Simulated XSwitch XCC: the REST API (HTTP, ``rest``) and a node publishing call events on
NATS (``traffic``); ``cli`` runs both as ``gateway sim xswitch``."""
