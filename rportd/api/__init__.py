"""The REST API (/api/v1): aiohttp routes, middlewares and payload shapes."""
