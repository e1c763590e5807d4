"""Simulated Meiqia call center: the unified call OpenAPI (seed 001) and a webhook sender."""
