DROP TABLE `audit_log`;
DROP TABLE `api_tokens`;
DROP TABLE `group_permissions`;
DROP TABLE `tenants`;
