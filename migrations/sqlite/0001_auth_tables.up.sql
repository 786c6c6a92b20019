-- Credentials of agents (clients_auth), API users (users) and their groups (groups), each with a
-- tenant. The tenant is never NULL: '' means "no tenant" (an orphaned client, a tenantless user).
CREATE TABLE IF NOT EXISTS "clients_auth" (
  "id" TEXT NOT NULL PRIMARY KEY,
  "password" TEXT NOT NULL,
  "tenant" TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS "clients_auth_tenant" ON "clients_auth" ("tenant");

CREATE TABLE IF NOT EXISTS "users" (
  "username" TEXT NOT NULL,
  "password" TEXT NOT NULL,
  "tenant" TEXT NOT NULL DEFAULT ''
);
-- Usernames are unique across tenants: a login names exactly one tenant.
CREATE UNIQUE INDEX IF NOT EXISTS "users_username" ON "users" ("username");
CREATE INDEX IF NOT EXISTS "users_tenant" ON "users" ("tenant");

CREATE TABLE IF NOT EXISTS "groups" (
  "username" TEXT NOT NULL,
  "group" TEXT NOT NULL,
  "tenant" TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS "groups_username_group_tenant" ON "groups" ("username", "group", "tenant");
