"""Training: the shared loop (``loop``) and the studies' objectives built on it."""
