ALTER TABLE multi_jobs ADD schedule_id TEXT NULL;
