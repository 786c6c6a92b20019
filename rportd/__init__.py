"""rportd: a multi-tenant remote-access server, wire-compatible with rport clients."""

__version__ = "0.1.0"
__all__ = ["__version__"]
