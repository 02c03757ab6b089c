"""Gateway workers: N gateway processes on one address (SO_REUSEPORT) under one supervisor."""
