DROP TABLE "client_groups";
DROP TABLE "jobs";
DROP TABLE "multi_jobs";
