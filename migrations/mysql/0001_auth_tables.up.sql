-- Credentials of agents (clients_auth), API users (users) and their groups (groups), each with a
-- tenant. The tenant is never NULL: '' means "no tenant" (an orphaned client, a tenantless user).
CREATE TABLE IF NOT EXISTS `clients_auth` (
  `id` VARCHAR(100) NOT NULL,
  `password` VARCHAR(255) NOT NULL,
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  PRIMARY KEY (`id`),
  KEY `clients_auth_tenant` (`tenant`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Usernames are unique across tenants: a login names exactly one tenant.
CREATE TABLE IF NOT EXISTS `users` (
  `username` VARCHAR(150) NOT NULL,
  `password` VARCHAR(255) NOT NULL,
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  UNIQUE KEY `users_username` (`username`),
  KEY `users_tenant` (`tenant`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `groups` (
  `username` VARCHAR(150) NOT NULL,
  `group` VARCHAR(150) NOT NULL,
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  UNIQUE KEY `groups_username_group_tenant` (`username`, `group`, `tenant`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
