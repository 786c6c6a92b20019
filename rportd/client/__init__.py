"""Our Python rport agent: speaks the same bytes as the real rport client."""
