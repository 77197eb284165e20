-- The content repository: one row per mxc:// URI, local uploads and cached remote media.
-- Bytes live in the storage provider under their sha256 (content-addressed, stored once).
CREATE TABLE media (
    origin TEXT NOT NULL,              -- the server name in mxc://origin/media_id
    media_id TEXT NOT NULL,
    uploader TEXT,                     -- NULL for remote media and URL-preview images
    content_type TEXT,
    upload_name TEXT,                  -- the filename given at upload
    size BIGINT,
    sha256 TEXT,                       -- NULL while an async-created ID awaits its upload
    created_ts BIGINT NOT NULL,
    upload_ts BIGINT,                  -- NULL while pending
    unused_expires_at BIGINT,          -- pending IDs expire at this time; NULL once uploaded
    quarantined BOOLEAN NOT NULL DEFAULT FALSE,
    authenticated_only BOOLEAN NOT NULL DEFAULT FALSE,  -- uploaded during the legacy freeze
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_pending ON media (uploader, unused_expires_at);
CREATE INDEX media_sha256 ON media (sha256);

-- Generated thumbnails, keyed by the configured size they were made for.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
