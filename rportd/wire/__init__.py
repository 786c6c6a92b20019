"""The rport-v1 wire, shared by the server and our agent: WebSocket framing, SSH banners, pipes."""
