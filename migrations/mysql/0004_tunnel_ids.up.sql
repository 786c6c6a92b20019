-- The next tunnel id of each client: ids are stable across reconnects and never reused.
ALTER TABLE `clients` ADD COLUMN `next_tunnel_id` INT NOT NULL DEFAULT 1;
