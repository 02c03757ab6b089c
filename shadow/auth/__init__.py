"""Edge authentication: the jwt middleware (verification, claims conditions, forwarded claims)."""
