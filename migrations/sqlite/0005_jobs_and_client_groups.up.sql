-- Remote commands (jobs of one client, multi-client jobs) and client groups, each kept per tenant.
-- Keyed by (tenant, id) like the client registry: ids from an imported rport server can never
-- meet another tenant's. `details` is the rport JSON of the object; the columns beside it are
-- what queries filter and sort on.
CREATE TABLE "multi_jobs" (
  "tenant" TEXT NOT NULL DEFAULT '',
  "jid" TEXT NOT NULL,
  "started_at" TEXT NOT NULL,
  "created_by" TEXT NOT NULL,
  "details" TEXT NOT NULL,
  PRIMARY KEY ("tenant", "jid")
);
CREATE INDEX "multi_jobs_tenant_started_at" ON "multi_jobs" ("tenant", "started_at");

CREATE TABLE "jobs" (
  "tenant" TEXT NOT NULL DEFAULT '',
  "jid" TEXT NOT NULL,
  "client_id" TEXT NOT NULL,
  "multi_job_id" TEXT NULL,
  "status" TEXT NOT NULL,
  "started_at" TEXT NOT NULL,
  "finished_at" TEXT NULL,
  "created_by" TEXT NOT NULL,
  "details" TEXT NOT NULL,
  PRIMARY KEY ("tenant", "jid")
);
CREATE INDEX "jobs_tenant_client_started_at" ON "jobs" ("tenant", "client_id", "started_at");
CREATE INDEX "jobs_tenant_multi_job_id" ON "jobs" ("tenant", "multi_job_id");

CREATE TABLE "client_groups" (
  "tenant" TEXT NOT NULL DEFAULT '',
  "id" TEXT NOT NULL,
  "description" TEXT NOT NULL DEFAULT '',
  "params" TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY ("tenant", "id")
);
