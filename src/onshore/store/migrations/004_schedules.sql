-- Onshore schema 4: schedules. One row per scheduled function of a live app: its schedule, what its period
-- counts from, when it runs next and when it last ran.
CREATE TABLE schedules (function_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX schedules_app ON schedules (app_id);
