-- Tenants as records (quotas, status), what each group of a tenant may do, personal API tokens
-- and the audit log. A tenant named only by operators' own tables has no row here and still works.
CREATE TABLE `tenants` (
  `name` VARCHAR(50) NOT NULL,
  `created_at` VARCHAR(40) NOT NULL,
  `status` VARCHAR(20) NOT NULL DEFAULT 'active',
  `quotas` TEXT NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- permissions: a JSON list of names such as "clients:read", "tunnels:write" or "*".
CREATE TABLE `group_permissions` (
  `tenant` VARCHAR(50) NOT NULL,
  `group` VARCHAR(150) NOT NULL,
  `permissions` TEXT NOT NULL,
  PRIMARY KEY (`tenant`, `group`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Personal API tokens: only a hash of the secret is kept; scopes narrow the owner's permissions.
CREATE TABLE `api_tokens` (
  `id` VARCHAR(64) NOT NULL,
  `tenant` VARCHAR(50) NOT NULL,
  `username` VARCHAR(150) NOT NULL,
  `name` VARCHAR(150) NOT NULL DEFAULT '',
  `secret_hash` VARCHAR(255) NOT NULL,
  `scopes` TEXT NOT NULL,
  `created_at` VARCHAR(40) NOT NULL,
  `expires_at` VARCHAR(40) NULL,
  PRIMARY KEY (`id`),
  KEY `api_tokens_tenant_username` (`tenant`, `username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `audit_log` (
  `id` BIGINT NOT NULL AUTO_INCREMENT,
  `tenant` VARCHAR(50) NOT NULL,
  `username` VARCHAR(150) NOT NULL,
  `action` VARCHAR(100) NOT NULL,
  `target` VARCHAR(255) NOT NULL DEFAULT '',
  `result` VARCHAR(40) NOT NULL,
  `source` VARCHAR(64) NOT NULL DEFAULT '',
  `at` VARCHAR(40) NOT NULL,
  `details` TEXT NOT NULL,
  PRIMARY KEY (`id`),
  KEY `audit_log_tenant_at` (`tenant`, `at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
