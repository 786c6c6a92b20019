DROP TABLE "api_token_revocations";
