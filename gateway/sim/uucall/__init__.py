"""Simulated UUCall cloud: the REST API of seed 000 (``rest``); ``cli`` runs it as ``gateway sim
uucall``."""
