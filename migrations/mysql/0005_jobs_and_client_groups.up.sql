-- Remote commands (jobs of one client, multi-client jobs) and client groups, each kept per tenant.
-- Keyed by (tenant, id) like the client registry: ids from an imported rport server can never
-- meet another tenant's. `details` is the rport JSON of the object; the columns beside it are
-- what queries filter and sort on. Binary collation: tenants J and j stay two.
CREATE TABLE `multi_jobs` (
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  `jid` VARCHAR(64) NOT NULL,
  `started_at` VARCHAR(40) NOT NULL,
  `created_by` VARCHAR(150) NOT NULL,
  `details` MEDIUMTEXT NOT NULL,
  PRIMARY KEY (`tenant`, `jid`),
  KEY `multi_jobs_tenant_started_at` (`tenant`, `started_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `jobs` (
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  `jid` VARCHAR(64) NOT NULL,
  `client_id` VARCHAR(150) NOT NULL,
  `multi_job_id` VARCHAR(64) NULL,
  `status` VARCHAR(20) NOT NULL,
  `started_at` VARCHAR(40) NOT NULL,
  `finished_at` VARCHAR(40) NULL,
  `created_by` VARCHAR(150) NOT NULL,
  `details` MEDIUMTEXT NOT NULL,
  PRIMARY KEY (`tenant`, `jid`),
  KEY `jobs_tenant_client_started_at` (`tenant`, `client_id`, `started_at`),
  KEY `jobs_tenant_multi_job_id` (`tenant`, `multi_job_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `client_groups` (
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  `id` VARCHAR(150) NOT NULL,
  `description` TEXT NOT NULL,
  `params` MEDIUMTEXT NOT NULL,
  PRIMARY KEY (`tenant`, `id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
