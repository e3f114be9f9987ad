-- Onshore schema 1: every aggregate as JSON rows, with the columns lookups need.
CREATE TABLE apps (app_id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX apps_name ON apps (name);
CREATE TABLE deployments (app_id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
                          PRIMARY KEY (app_id, version));
CREATE TABLE functions (function_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX functions_app ON functions (app_id);
CREATE TABLE classes (class_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE secrets (secret_id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', environment TEXT NOT NULL,
                      data TEXT NOT NULL);
CREATE INDEX secrets_name ON secrets (environment, name);
CREATE TABLE tokens (token_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE mounts (mount_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE images (image_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX images_hash ON images (content_hash);
CREATE TABLE calls (function_call_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE inputs (input_id TEXT PRIMARY KEY, function_call_id TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
                     data TEXT NOT NULL);
CREATE INDEX inputs_call ON inputs (function_call_id);
CREATE INDEX inputs_open ON inputs (done);
CREATE TABLE outputs (input_id TEXT PRIMARY KEY, function_call_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX outputs_call ON outputs (function_call_id);
