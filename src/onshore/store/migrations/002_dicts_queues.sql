-- Onshore schema 2: Dicts and Queues. Their identities as JSON rows, entries and items as rows of bytes.
CREATE TABLE kv_objects (object_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
                         environment TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX kv_objects_name ON kv_objects (kind, environment, name);
CREATE TABLE dict_entries (dict_id TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
                           PRIMARY KEY (dict_id, key));
CREATE TABLE queue_items (queue_id TEXT NOT NULL, partition_key BLOB NOT NULL, entry_id INTEGER NOT NULL,
                          value BLOB NOT NULL, PRIMARY KEY (queue_id, partition_key, entry_id));
CREATE TABLE queue_partitions (queue_id TEXT NOT NULL, partition_key BLOB NOT NULL, ttl_seconds INTEGER NOT NULL,
                               last_activity REAL NOT NULL, next_entry_id INTEGER NOT NULL DEFAULT 1,
                               PRIMARY KEY (queue_id, partition_key));
