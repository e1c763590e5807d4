"""Meiqia call center (unified call OpenAPI): records and seats polled, webhooks, click-to-dial."""
