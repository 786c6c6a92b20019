"""Authentication: client credentials, API users, passwords and tokens."""
