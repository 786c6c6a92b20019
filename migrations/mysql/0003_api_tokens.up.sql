-- Revoked API tokens (DELETE /api/v1/login), kept until they would have expired anyway.
CREATE TABLE `api_token_revocations` (
  `jti` VARCHAR(64) NOT NULL,
  `expires` BIGINT NOT NULL,
  PRIMARY KEY (`jti`),
  KEY `api_token_revocations_expires` (`expires`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
