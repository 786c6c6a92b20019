-- rportd's own record of connected and recently lost clients, so a restart loses nothing.
-- Keyed by (tenant, id): client ids are unique per tenant, not globally.
CREATE TABLE "clients" (
  "tenant" TEXT NOT NULL DEFAULT '',
  "id" TEXT NOT NULL,
  "client_auth_id" TEXT NOT NULL,
  "details" TEXT NOT NULL,
  "tunnels" TEXT NOT NULL DEFAULT '[]',
  "disconnected_at" TEXT NULL,
  PRIMARY KEY ("tenant", "id")
);
CREATE INDEX "clients_disconnected_at" ON "clients" ("disconnected_at");
