-- Onshore schema 3: Volumes. Their identities are kv_objects rows of kind volume. Each holds its committed
-- tree (one row per file, directory or symbolic link, files naming their content by sha256) and the number of
-- its last commit.
CREATE TABLE volume_entries (volume_id TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
                             mode INTEGER NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
                             object TEXT NOT NULL DEFAULT '', PRIMARY KEY (volume_id, path));
CREATE TABLE volume_commits (volume_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
