ALTER TABLE `clients` DROP COLUMN `next_tunnel_id`;
