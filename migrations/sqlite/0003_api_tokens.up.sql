-- Revoked API tokens (DELETE /api/v1/login), kept until they would have expired anyway.
CREATE TABLE "api_token_revocations" (
  "jti" TEXT NOT NULL PRIMARY KEY,
  "expires" INTEGER NOT NULL
);
CREATE INDEX "api_token_revocations_expires" ON "api_token_revocations" ("expires");
