"""XSwitch XCC (FreeSWITCH based): call events over NATS, management over the REST API."""
