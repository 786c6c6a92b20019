DROP TABLE "clients";
