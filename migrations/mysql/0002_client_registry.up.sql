-- rportd's own record of connected and recently lost clients, so a restart loses nothing.
-- Keyed by (tenant, id): client ids are unique per tenant, not globally.
CREATE TABLE `clients` (
  `tenant` VARCHAR(50) NOT NULL DEFAULT '',
  `id` VARCHAR(150) NOT NULL,
  `client_auth_id` VARCHAR(100) NOT NULL,
  `details` MEDIUMTEXT NOT NULL,
  `tunnels` MEDIUMTEXT NOT NULL,
  `disconnected_at` VARCHAR(40) NULL,
  PRIMARY KEY (`tenant`, `id`),
  KEY `clients_disconnected_at` (`disconnected_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
