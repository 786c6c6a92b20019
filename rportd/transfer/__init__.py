"""Moving tenants: rport data directories in, tenant archives out and in (see tables.TABLES)."""

__all__: list[str] = []
