"""UUCall cloud (``cloud.uucall.cn/rest``): account and billing state polled into ``account.*``
events, administration of notices, roles and sub-accounts as commands."""
