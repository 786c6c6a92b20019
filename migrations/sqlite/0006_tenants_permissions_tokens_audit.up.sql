-- Tenants as records (quotas, status), what each group of a tenant may do, personal API tokens
-- and the audit log. A tenant named only by operators' own tables has no row here and still works.
CREATE TABLE "tenants" (
  "name" TEXT NOT NULL PRIMARY KEY,
  "created_at" TEXT NOT NULL,
  "status" TEXT NOT NULL DEFAULT 'active',
  "quotas" TEXT NOT NULL DEFAULT '{}'
);

-- permissions: a JSON list of names such as "clients:read", "tunnels:write" or "*".
CREATE TABLE "group_permissions" (
  "tenant" TEXT NOT NULL,
  "group" TEXT NOT NULL,
  "permissions" TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY ("tenant", "group")
);

-- Personal API tokens: only a hash of the secret is kept; scopes narrow the owner's permissions.
CREATE TABLE "api_tokens" (
  "id" TEXT NOT NULL PRIMARY KEY,
  "tenant" TEXT NOT NULL,
  "username" TEXT NOT NULL,
  "name" TEXT NOT NULL DEFAULT '',
  "secret_hash" TEXT NOT NULL,
  "scopes" TEXT NOT NULL DEFAULT '[]',
  "created_at" TEXT NOT NULL,
  "expires_at" TEXT NULL
);
CREATE INDEX "api_tokens_tenant_username" ON "api_tokens" ("tenant", "username");

CREATE TABLE "audit_log" (
  "id" INTEGER PRIMARY KEY AUTOINCREMENT,
  "tenant" TEXT NOT NULL,
  "username" TEXT NOT NULL,
  "action" TEXT NOT NULL,
  "target" TEXT NOT NULL DEFAULT '',
  "result" TEXT NOT NULL,
  "source" TEXT NOT NULL DEFAULT '',
  "at" TEXT NOT NULL,
  "details" TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX "audit_log_tenant_at" ON "audit_log" ("tenant", "at");
