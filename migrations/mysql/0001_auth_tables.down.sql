DROP TABLE `groups`;
DROP TABLE `users`;
DROP TABLE `clients_auth`;
