DROP TABLE `clients`;
